"""`cocoon list`: the containers under the state root."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cocoon.cli.context import Context
from cocoon.oci.state import StateStore


def register(sub: Any) -> None:
    parser = sub.add_parser("list", help="list containers")
    parser.add_argument("-f", "--format", choices=("table", "json"), default="table")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    states = [s.oci_state() for s in StateStore(ctx.root).load_all()]
    if args.quiet:
        for state in states:
            print(state["id"])
    elif args.format == "json":
        print(json.dumps(states))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
