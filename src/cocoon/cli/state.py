"""`cocoon state`: the runtime-spec state of a container, as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser = sub.add_parser("state", help="print the state of a container as JSON")
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    print(json.dumps(runtime(ctx).state(args.container_id), indent=2))
    return 0
