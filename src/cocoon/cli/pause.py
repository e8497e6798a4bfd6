"""`cocoon pause` and `cocoon resume`: freeze and thaw every process of a container."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context


def register(sub: Any) -> None:
    pause = sub.add_parser("pause", help="freeze every process of a container")
    pause.add_argument("container_id")
    pause.set_defaults(func=run_pause)
    resume = sub.add_parser("resume", help="thaw a paused container")
    resume.add_argument("container_id")
    resume.set_defaults(func=run_resume)


def run_pause(args: argparse.Namespace, ctx: Context) -> int:
    runtime(ctx).pause(args.container_id)
    return 0


def run_resume(args: argparse.Namespace, ctx: Context) -> int:
    runtime(ctx).resume(args.container_id)
    return 0
