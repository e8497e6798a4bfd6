"""`cocoon config reference|example`: text generated from the settings' definitions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="print the configuration reference or an example file")
    what = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    what.add_parser("reference", help="the settings as the Markdown tables of docs/operations.md")
    what.add_parser("example", help="a config.toml with every setting at its default")
    parser.set_defaults(func=run, lenient_settings=True)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.config import reference

    sys.stdout.write(reference.reference() if args.what == "reference" else reference.example())
    return 0
