"""One reading of every sandbox under a VM root: its monitor's status, its host processes' CPU
and memory from /proc, the guest's own figures from the agent, and how long the agent took.

Each sandbox is asked through its monitor's socket (`SandboxClient`), all at once and each
within `timeout`: a sandbox that does not answer is reported as such (state "unreachable"),
never allowed to hold up the others or the scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.errors import CocoonError
from cocoon.sandbox.agentclient import GuestStats
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout, SandboxConfig

TIMEOUT = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessFigures:
    cpu_seconds: float
    resident_bytes: int


@dataclass
class SandboxSample:
    sandbox_id: str
    directory: str
    state: str = "unreachable"
    started_from: str = ""
    accel: str = ""
    boot_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    processes: dict[str, ProcessFigures] = field(default_factory=dict)
    guest: GuestStats | None = None
    # seconds each agent call of this reading took (the agent's latency as a client sees it)
    rpc_seconds: dict[str, float] = field(default_factory=dict)
    error: str = ""


def process_figures(pid: int, proc: Path = Path("/proc")) -> ProcessFigures | None:
    """CPU time (user + system) and resident memory of `pid` with its threads; None if gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        statm = (proc / str(pid) / "statm").read_text().split()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return ProcessFigures((utime + stime) / CLK_TCK, int(statm[1]) * PAGE)


def children(pid: int, proc: Path = Path("/proc")) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in (proc / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


async def sample_sandbox(layout: Layout, timeout: float = TIMEOUT) -> SandboxSample:
    try:
        config = SandboxConfig.load(layout.config)
        sample = SandboxSample(config.sandbox_id, layout.root.name,
                               labels=dict(config.extra.get("labels") or {}))
    except (OSError, ValueError, TypeError) as err:
        return SandboxSample(layout.root.name, layout.root.name, error=f"sandbox.json: {err}")
    try:
        async with asyncio.timeout(timeout):
            client = await SandboxClient.connect(layout.monitor_socket, timeout=timeout)
            try:
                status = await client.status(timeout=timeout)
                sample.state = status.state
                sample.started_from = status.started_from
                sample.accel = status.accel
                sample.boot_id = status.boot_id
                sample.phases = {p.name: p.seconds for p in status.phases}
                pids = {"monitor": status.monitor_pid, "qemu": status.qemu_pid,
                        "virtiofsd": status.virtiofsd_pid}
                for name, pid in pids.items():
                    figures = process_figures(pid) if pid > 0 else None
                    if figures is not None and name == "virtiofsd":
                        for child in children(pid):  # its sandboxed worker
                            extra = process_figures(child)
                            if extra is not None:
                                figures = ProcessFigures(
                                    figures.cpu_seconds + extra.cpu_seconds,
                                    figures.resident_bytes + extra.resident_bytes)
                    if figures is not None:
                        sample.processes[name] = figures
                if status.state in ("running", "pooled"):
                    started = time.perf_counter()
                    sample.guest = await client.agent.guest_stats(timeout=timeout)
                    sample.rpc_seconds["GuestStats"] = time.perf_counter() - started
            finally:
                await client.close()
    except (CocoonError, OSError, TimeoutError) as err:
        sample.error = str(err) or type(err).__name__
    return sample


def sandbox_dirs(vm_root: Path) -> list[Layout]:
    if not vm_root.is_dir():
        return []
    return [Layout(d) for d in sorted(vm_root.iterdir())
            if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")
            and (d / "sandbox.json").exists()]


async def sample_all(vm_root: Path, timeout: float = TIMEOUT) -> list[SandboxSample]:
    return list(await asyncio.gather(*(sample_sandbox(layout, timeout)
                                       for layout in sandbox_dirs(vm_root))))
