"""`cocoon debug-console ID`: a shell in the guest of a container's VM, outside its containers."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser = sub.add_parser("debug-console",
                            help="open a shell in a container's guest (when enabled)")
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pathlib import Path

    from cocoon.errors import ContainerStateError
    from cocoon.sandbox import debugconsole
    from cocoon.sandbox.layout import Layout

    state = runtime(ctx).load(args.container_id)
    if not state.vm_dir or not state.current_status().can_update():
        raise ContainerStateError(f"container {state.id} has no running VM")
    debugconsole.attach(Layout(Path(state.vm_dir)), state.id)
    return 0
