"""The guest's memory, CPU time and load, read from its /proc for `GuestStats`."""

from __future__ import annotations

import os
from pathlib import Path

from cocoon.protocols.gen import guest_pb2

PROC = Path("/proc")


def read(proc: Path = PROC) -> guest_pb2.GuestStatsResponse:
    meminfo = _meminfo((proc / "meminfo").read_text())
    user, system, idle, cpus = _cpu((proc / "stat").read_text())
    load = (proc / "loadavg").read_text().split()
    running = int(load[3].split("/")[0]) if len(load) > 3 and "/" in load[3] else 0
    return guest_pb2.GuestStatsResponse(
        memory_total_bytes=meminfo.get("MemTotal", 0) * 1024,
        memory_available_bytes=meminfo.get("MemAvailable", 0) * 1024,
        cpu_user_seconds=user, cpu_system_seconds=system, cpu_idle_seconds=idle,
        load1=float(load[0]), load5=float(load[1]), load15=float(load[2]),
        cpus=cpus, processes=running)


def _meminfo(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = int(fields[0])
    return values


def _cpu(text: str) -> tuple[float, float, float, int]:
    """User (with nice), system (with irq and softirq) and idle (with iowait) seconds, and the
    number of CPUs, from /proc/stat."""
    hz = os.sysconf("SC_CLK_TCK")
    total = [0] * 8
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            total = [int(v) for v in line.split()[1:9]]
        elif line.startswith("cpu"):
            cpus += 1
    user, nice, system, idle, iowait, irq, softirq, _steal = (total + [0] * 8)[:8]
    return (user + nice) / hz, (system + irq + softirq) / hz, (idle + iowait) / hz, cpus
