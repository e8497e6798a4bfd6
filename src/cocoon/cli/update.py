"""`cocoon update`: change a container's resource limits (cgroups in its guest)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cocoon.cli.common import parse_size, runtime
from cocoon.cli.context import Context
from cocoon.errors import ConfigError


def register(sub: Any) -> None:
    parser = sub.add_parser("update", help="update a container's resource limits")
    parser.add_argument("-r", "--resources", default=None,
                        help="a JSON file of linux.resources ('-' for stdin)")
    parser.add_argument("--memory", default=None)
    parser.add_argument("--memory-reservation", default=None)
    parser.add_argument("--memory-swap", default=None)
    parser.add_argument("--cpu-shares", type=int, default=None)
    parser.add_argument("--cpu-quota", type=int, default=None)
    parser.add_argument("--cpu-period", type=int, default=None)
    parser.add_argument("--cpuset-cpus", default=None)
    parser.add_argument("--cpuset-mems", default=None)
    parser.add_argument("--pids-limit", type=int, default=None)
    parser.add_argument("--blkio-weight", type=int, default=None)
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def resources_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.resources:
        try:
            text = sys.stdin.read() if args.resources == "-" else Path(args.resources).read_text()
            data = json.loads(text)
        except (OSError, ValueError) as err:
            raise ConfigError(f"--resources {args.resources}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"--resources {args.resources}: expected a JSON object")
        return data
    memory: dict[str, Any] = {}
    if args.memory is not None:
        memory["limit"] = parse_size(args.memory)
    if args.memory_reservation is not None:
        memory["reservation"] = parse_size(args.memory_reservation)
    if args.memory_swap is not None:
        memory["swap"] = parse_size(args.memory_swap)
    cpu: dict[str, Any] = {}
    for key, value in (("shares", args.cpu_shares), ("quota", args.cpu_quota),
                       ("period", args.cpu_period), ("cpus", args.cpuset_cpus),
                       ("mems", args.cpuset_mems)):
        if value is not None:
            cpu[key] = value
    resources: dict[str, Any] = {}
    if memory:
        resources["memory"] = memory
    if cpu:
        resources["cpu"] = cpu
    if args.pids_limit is not None:
        resources["pids"] = {"limit": args.pids_limit}
    if args.blkio_weight is not None:
        resources["blockIO"] = {"weight": args.blkio_weight}
    if not resources:
        raise ConfigError("update: nothing to change (give --resources or a limit flag)")
    return resources


def run(args: argparse.Namespace, ctx: Context) -> int:
    runtime(ctx).update(args.container_id, resources_from(args))
    return 0
