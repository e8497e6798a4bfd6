"""OCI `linux.resources` as cgroup v2 file writes: runc's conversion rules, used by the agent
for the guest's cgroups and by the host side for a sandbox's cgroup on a cgroup v2 host.

The OCI resources section is written for cgroup v1; runc converts cpu shares to weight,
memory+swap to swap.max, quota/period to cpu.max.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def shares_to_weight(shares: int) -> int:
    """runc's mapping of cpu.shares [2, 262144] onto cpu.weight [1, 10000]."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def _max(value: int | None) -> str:
    return "max" if value is None or value < 0 else str(value)


def v2_settings(resources: Mapping[str, Any]) -> dict[str, str]:
    """Translate an OCI `linux.resources` object into cgroup v2 file writes."""
    out: dict[str, str] = {}
    memory = resources.get("memory") or {}
    limit = memory.get("limit")
    if limit is not None and limit != 0:
        out["memory.max"] = _max(limit)
    reservation = memory.get("reservation")
    if reservation:
        out["memory.low"] = _max(reservation)
    swap = memory.get("swap")
    if swap is not None and swap != 0:
        if swap < 0:
            out["memory.swap.max"] = "max"
        elif limit is not None and limit > 0:
            out["memory.swap.max"] = str(max(swap - limit, 0))
    cpu = resources.get("cpu") or {}
    if cpu.get("shares"):
        out["cpu.weight"] = str(shares_to_weight(int(cpu["shares"])))
    # runc's rule: a quota of 0 and a period of 0 are not set (engines send zeros for what an
    # update leaves alone: `docker update -m` does); a quota of 0 or less with a period is
    # "max"; no period leaves the kernel's
    quota, period = int(cpu.get("quota") or 0), int(cpu.get("period") or 0)
    if quota or period:
        out["cpu.max"] = (str(quota) if quota > 0 else "max") + (f" {period}" if period else "")
    if cpu.get("cpus"):
        out["cpuset.cpus"] = str(cpu["cpus"])
    if cpu.get("mems"):
        out["cpuset.mems"] = str(cpu["mems"])
    pids = resources.get("pids") or {}
    if "limit" in pids and pids["limit"] is not None:
        out["pids.max"] = "max" if pids["limit"] <= 0 else str(pids["limit"])
    for key, value in (resources.get("unified") or {}).items():
        if "/" in key or key.startswith("."):
            raise ValueError(f"linux.resources.unified: invalid cgroup file name {key!r}")
        out[str(key)] = str(value)
    return out
