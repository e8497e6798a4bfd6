"""`cocoon run`: create and start a container; in the foreground, relay its stdio and exit
with its status (128 + n for a signal), then delete it."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context
from cocoon.cli.create import add_create_flags, options


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="create and start a container")
    parser.add_argument("-d", "--detach", action="store_true",
                        help="return after the start; the container runs on")
    parser.add_argument("--keep", action="store_true",
                        help="accepted for runc compatibility")
    parser.add_argument("--no-subreaper", action="store_true", help="accepted (no effect)")
    add_create_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    rt = runtime(ctx)
    if args.detach:
        rt.create(args.container_id, options(args))
        rt.start(args.container_id)
        return 0
    return rt.run_foreground(args.container_id, options(args))
