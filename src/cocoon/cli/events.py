"""`cocoon events`: container statistics and OOM notifications as JSON lines (runc's format)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context
from cocoon.errors import AgentError, CocoonError, ConfigError
from cocoon.oci.state import Status
from cocoon.protocols.gen import agent_pb2
from cocoon.runtime import control
from cocoon.runtime.operations import Runtime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's duration syntax (`5s`, `500ms`, `1m30s`), as runc's --interval takes it."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"invalid duration {text!r} (e.g. 5s, 500ms)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} must be positive")
    return seconds


def register(sub: Any) -> None:
    parser = sub.add_parser("events", help="print container statistics and OOM events")
    parser.add_argument("--stats", action="store_true", help="print statistics once and exit")
    parser.add_argument("--interval", default="5s", help="statistics interval (default 5s)")
    parser.add_argument("container_id")
    parser.set_defaults(func=run)


def stats_event(container_id: str, response: agent_pb2.StatsContainerResponse) -> dict[str, Any]:
    cg = response.cgroup_stats
    usage = cg.cpu_stats.cpu_usage
    memory = cg.memory_stats
    return {"type": "stats", "id": container_id, "data": {
        "cpu": {"usage": {"total": usage.total_usage, "percpu": list(usage.percpu_usage),
                          "kernel": usage.usage_in_kernelmode, "user": usage.usage_in_usermode},
                "throttling": {"periods": cg.cpu_stats.throttling_data.periods,
                               "throttledPeriods": cg.cpu_stats.throttling_data.throttled_periods,
                               "throttledTime": cg.cpu_stats.throttling_data.throttled_time}},
        "memory": {"cache": memory.cache,
                   "usage": {"limit": memory.usage.limit, "usage": memory.usage.usage,
                             "max": memory.usage.max_usage, "failcnt": memory.usage.failcnt},
                   "swap": {"usage": memory.swap_usage.usage},
                   "raw": dict(memory.stats)},
        "pids": {"current": cg.pids_stats.current, "limit": cg.pids_stats.limit},
        "blkio": {}, "hugetlb": {}}}


async def _stream(rt: Runtime, container_id: str, interval: float) -> None:
    client = await control.connect(rt.load(container_id))

    async def ooms() -> None:
        while True:
            try:
                if await client.agent.get_oom_event() == container_id:
                    print(json.dumps({"type": "oom", "id": container_id}), flush=True)
            except AgentError:  # a guest's lie: refused; the watch goes on
                await asyncio.sleep(1.0)

    watcher = asyncio.create_task(ooms())
    try:
        while rt.load(container_id).current_status() is not Status.STOPPED:
            response = await client.agent.stats_container(container_id, timeout=30.0)
            print(json.dumps(stats_event(container_id, response)), flush=True)
            await asyncio.sleep(interval)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, CocoonError):
            await watcher
        await client.close()


def run(args: argparse.Namespace, ctx: Context) -> int:
    rt = runtime(ctx)
    if args.stats:
        print(json.dumps(stats_event(args.container_id, rt.stats(args.container_id))))
        return 0
    interval = parse_duration(args.interval)
    with contextlib.suppress(KeyboardInterrupt, CocoonError):
        asyncio.run(_stream(rt, args.container_id, interval))
    return 0
