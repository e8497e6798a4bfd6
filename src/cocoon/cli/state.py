"""`cocoon state`: the runtime-spec state of a container, as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cocoon.cli.context import Context
from cocoon.oci.state import StateStore


def register(sub: Any) -> None:
    parser = sub.add_parser("state", help="print the state of a container as JSON")
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    # what Runtime.state answers, without importing the runtime: the stored state, its status
    # corrected by whether the container's shim still lives
    print(json.dumps(StateStore(ctx.root).load(args.container_id).oci_state(), indent=2))
    return 0
