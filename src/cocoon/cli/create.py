"""`cocoon create`: boot the container's VM and set the container up, waiting for `start`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context
from cocoon.runtime.operations import CreateOptions


def add_create_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--bundle", default=".", help="path to the OCI bundle")
    parser.add_argument("--console-socket", default=None,
                        help="unix socket that receives the pty master of a terminal")
    parser.add_argument("--pid-file", default=None, help="write the container's host pid here")
    parser.add_argument("--no-pivot", action="store_true",
                        help="accepted for runc compatibility (the guest always pivots)")
    parser.add_argument("--no-new-keyring", action="store_true", help="accepted (no effect)")
    parser.add_argument("--preserve-fds", type=int, default=0,
                        help="accepted; extra descriptors cannot cross into a VM")
    parser.add_argument("container_id")


def options(args: argparse.Namespace) -> CreateOptions:
    return CreateOptions(bundle=Path(args.bundle),
                         pid_file=Path(args.pid_file).absolute() if args.pid_file else None,
                         console_socket=args.console_socket)


def register(sub: Any) -> None:
    parser = sub.add_parser("create", help="create a container (boots its VM)")
    add_create_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    runtime(ctx).create(args.container_id, options(args))
    return 0
