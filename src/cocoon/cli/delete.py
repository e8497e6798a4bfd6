"""`cocoon delete`: remove a stopped container and its VM (`--force` kills it first)."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context
from cocoon.errors import ContainerNotFoundError


def register(sub: Any) -> None:
    parser = sub.add_parser("delete", help="delete a container and everything it holds")
    parser.add_argument("-f", "--force", action="store_true",
                        help="kill the container first if it is still running")
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    try:
        runtime(ctx).delete(args.container_id, force=args.force)
    except ContainerNotFoundError:
        if args.force:
            return 0  # runc: deleting a container that is gone is not an error with --force
        raise
    return 0
