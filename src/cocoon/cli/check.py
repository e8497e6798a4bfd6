"""`cocoon check`: can this host run VMs, and with which acceleration."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "check", help="check that this host can run Cocoon VMs")
    parser.add_argument("--reprobe", action="store_true",
                        help="ignore the cached acceleration probe and run it again")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.hypervisor import hostcheck

    report = hostcheck.check_host(reprobe=args.reprobe)
    print(report.render())
    return 0 if report.ok else 1
