"""`cocoon start`: run the process of a created container."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser = sub.add_parser("start", help="start a created container")
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    runtime(ctx).start(args.container_id)
    return 0
