"""Container cgroups inside the guest (cgroup v2): limits, freezing, statistics, OOM counts.

The OCI resources section is written for cgroup v1; runc's conversion rules to v2
(`cocoon.linux.cgroupv2`) are applied here. Each container gets
`/sys/fs/cgroup/cocoon/<container id>`; the guest has no other tenants, so `cgroupsPath` is
not used in the guest (the host side creates it on the host: `cocoon.hostcgroup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cocoon.linux.cgroupv2 import shares_to_weight, v2_settings

logger = logging.getLogger("cocoon.agent.cgroups")

ROOT = Path("/sys/fs/cgroup")
PARENT = "cocoon"

__all__ = ["Cgroup", "shares_to_weight", "v2_settings"]


class Cgroup:
    """One container's cgroup directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, container_id: str, root: Path = ROOT) -> Cgroup:
        parent = root / PARENT
        if not parent.exists():
            parent.mkdir()
            controllers = (root / "cgroup.subtree_control").read_text().split()
            if controllers:
                (parent / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in controllers))
        path = parent / container_id
        path.mkdir(exist_ok=True)
        return cls(path)

    def write(self, name: str, value: str) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError as err:
            raise OSError(err.errno, f"cgroup {name}={value}: {err.strerror}",
                          str(self.path / name)) from err

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def apply(self, resources: Mapping[str, Any]) -> None:
        for name, value in v2_settings(resources).items():
            self.write(name, value)

    def add(self, pid: int) -> None:
        self.write("cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.read("cgroup.procs").split()]
        except OSError:
            return []

    async def freeze(self, frozen: bool = True, timeout: float = 5.0) -> None:
        """Freeze or thaw every process of the cgroup and wait until the kernel reports it."""
        self.write("cgroup.freeze", "1" if frozen else "0")
        want = "frozen 1" if frozen else "frozen 0"
        deadline = time.monotonic() + timeout
        while want not in self.read("cgroup.events"):
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, f"cgroup {self.path} did not reach {want!r}")
            await asyncio.sleep(0.005)

    def frozen(self) -> bool:
        return "frozen 1" in self.read("cgroup.events")

    def oom_kills(self) -> int:
        try:
            for line in self.read("memory.events").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        if sig == signal.SIGKILL and (self.path / "cgroup.kill").exists():
            self.write("cgroup.kill", "1")
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, prefix in (("cpu.stat", "cpu."), ("memory.stat", "memory."),
                             ("io.stat", None)):
            try:
                text = self.read(name)
            except OSError:
                continue
            if prefix is None:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    out[prefix + key] = int(value)
        for name in ("memory.current", "memory.max", "memory.swap.current", "pids.current",
                     "pids.max"):
            try:
                value = self.read(name).strip()
            except OSError:
                continue
            if value.isdigit():
                out[name] = int(value)
        out["memory.oom_kill"] = self.oom_kills()
        return out

    async def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in the cgroup and remove it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    logger.warning("cannot remove cgroup %s: %s", self.path, err)
                    return
                if self.frozen():
                    self.write("cgroup.freeze", "0")
                self.kill_all()
                await asyncio.sleep(0.01)
