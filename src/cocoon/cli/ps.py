"""`cocoon ps`: the processes of a container.

`--format json` gives host pids, as runc does (the per-process shims that stand for the guest
processes; engines pass them to host tools); the table shows the processes inside the guest.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser = sub.add_parser("ps", help="list the processes of a container")
    parser.add_argument("-f", "--format", choices=("table", "json"), default="table")
    parser.add_argument("container_id")
    parser.add_argument("ps_args", nargs=argparse.REMAINDER, help="ignored (ps(1) arguments)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    rt = runtime(ctx)
    if args.format == "json":
        print(json.dumps(rt.processes(args.container_id)))
    else:
        print(rt.guest_processes(args.container_id), end="")
    return 0
