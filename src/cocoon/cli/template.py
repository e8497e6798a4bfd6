"""`cocoon template build|show|rm`: the VM templates sandboxes start from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "template", help="build, list or remove the VM templates sandboxes start from")
    verbs = parser.add_subparsers(dest="template_verb", metavar="ACTION", required=True)
    build = verbs.add_parser("build", help="build the template sandboxes of this size use "
                                           "(kept when a whole one exists)")
    build.add_argument("--memory", type=int, default=None, metavar="MIB",
                       help="guest memory in MiB (default: the default VM size)")
    build.add_argument("--vcpus", type=int, default=None,
                       help="virtual CPUs (default: hypervisor.vcpus)")
    build.add_argument("--rebuild", action="store_true", help="build it even if it exists")
    build.set_defaults(func=run_build)
    show = verbs.add_parser("show", help="list the templates and whether each is whole")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)
    rm = verbs.add_parser("rm", help="remove templates (all unless named) and stop the warm "
                                     "pool's clones of them")
    rm.add_argument("names", nargs="*", metavar="NAME")
    rm.set_defaults(func=run_rm)


def run_build(args: argparse.Namespace, ctx: Context) -> int:
    import asyncio

    from cocoon.config import current as settings
    from cocoon.runtime import sizing
    from cocoon.template import manage

    memory = args.memory or sizing.default_memory_mib()
    vcpus = args.vcpus or settings().hypervisor.vcpus
    template, built = asyncio.run(manage.build(memory, vcpus, rebuild=args.rebuild))
    data_mib = int(template.meta.get("ram_allocated_bytes", 0)) >> 20
    verb = f"built in {template.meta.get('build_seconds')} s" if built else "already built"
    print(f"template {template.name}: {memory} MiB, {vcpus} vCPU, {verb} "
          f"({data_mib} MiB of RAM data) at {template.path}")
    return 0


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.template import manage

    entries = manage.show()
    members = manage.pool_members()
    if args.json:
        summaries = []
        for entry in entries:
            ready, starting = members.get(entry.name, (0, 0))
            summaries.append({**entry.summary(), "pool_ready": ready,
                              "pool_starting": starting})
        print(json.dumps(summaries, indent=2))
        return 0
    if not entries:
        print("no templates")
    for entry in entries:
        info = entry.summary()
        if entry.problem:
            print(f"{entry.name}  DAMAGED: {entry.problem}")
            continue
        ready, starting = members.get(entry.name, (0, 0))
        pooled = f"  pool: {ready} ready, {starting} starting" if ready or starting else ""
        print(f"{entry.name}  {info['memory_mib']} MiB  {info['vcpus']} vCPU  {info['accel']}  "
              f"{info['machine']}  image {str(info['image_digest'])[:16]}  "
              f"{int(info['ram_data_bytes'] or 0) >> 20} MiB of RAM data  "
              f"built {info['built_at']}{pooled}")
    return 0


def run_rm(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.template import manage

    removed, stopped = manage.remove(args.names)
    print(f"removed {len(removed)} template{'s' if len(removed) != 1 else ''}"
          + (f" ({', '.join(removed)})" if removed else "")
          + f" and stopped {len(stopped)} pooled clone{'s' if len(stopped) != 1 else ''}")
    return 0
