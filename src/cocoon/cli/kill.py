"""`cocoon kill`: send a signal to the container's init process (or all processes)."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.common import parse_signal
from cocoon.cli.context import Context
from cocoon.oci.state import StateStore
from cocoon.runtime import control


def register(sub: Any) -> None:
    parser = sub.add_parser("kill", help="send a signal to a container (default SIGTERM)")
    parser.add_argument("-a", "--all", action="store_true",
                        help="signal every process of the container")
    parser.add_argument("container_id")
    parser.add_argument("signal", nargs="?", default="SIGTERM")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    control.kill(StateStore(ctx.root), args.container_id, parse_signal(args.signal),
                 all_processes=args.all)
    return 0
