"""A sandbox's cgroup on the host (Kata's `sandbox_cgroup_only`): made at the container's
`cgroupsPath` in every mounted hierarchy, given the spec's limits, holding the VM's host
processes (monitor, QEMU with its vCPU threads, virtiofsd) and the container's shims, removed
with the container.

The leaf is removed, and the parents this cgroup's creation made when they are empty by then;
parents that were there before (a kubelet's pod cgroup, podman's libpod_parent) belong to whoever
laid them out and stay. Charges already made elsewhere stay there when a process moves in
(the kernel no longer moves them), so a cold-booted VM's monitor enters before QEMU starts,
while a clone from the warm pool keeps the memory it touched while it waited.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocoon.errors import ConfigError, SandboxError
from cocoon.hostcgroup import hierarchy, settings
from cocoon.hostcgroup.path import resolve
from cocoon.oci.spec import LinuxResources

logger = logging.getLogger("cocoon.hostcgroup")

V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids", "hugetlb")


@dataclass
class HostCgroup:
    """The directories of one container's cgroup, by hierarchy key ("memory", "cpu,cpuacct",
    "name=systemd", "" for the unified hierarchy), and the VM size its limits are made for."""

    dirs: dict[str, str] = field(default_factory=dict)
    vm_memory: int = 0  # bytes of guest RAM: the memory bound is made from it
    controllers: dict[str, list[str]] = field(default_factory=dict)  # key -> its controllers
    made_parents: list[str] = field(default_factory=list)  # ancestors create() made, deepest first

    @classmethod
    def plan(cls, cgroups_path: str, container_id: str, vm_memory: int,
             systemd: bool = False) -> HostCgroup:
        """Where the cgroup goes on this host (nothing is made yet)."""
        wanted = resolve(cgroups_path, container_id, systemd)
        own = hierarchy.own_cgroups()
        dirs: dict[str, str] = {}
        controllers: dict[str, list[str]] = {}
        for found in hierarchy.hierarchies():
            try:
                dirs[found.key] = str(found.directory(wanted.under(own.get(found.key, "/"))))
            except ValueError as err:
                raise ConfigError(f"config.json: linux.cgroupsPath: {err}",
                                  field="linux.cgroupsPath") from err
            controllers[found.key] = sorted(found.controllers)
        return cls(dirs, vm_memory, controllers)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> HostCgroup | None:
        if not data:
            return None
        return cls(dict(data.get("dirs") or {}), int(data.get("vm_memory") or 0),
                   {k: list(v) for k, v in (data.get("controllers") or {}).items()},
                   [str(p) for p in data.get("made_parents") or ()])

    def to_json(self) -> dict[str, Any]:
        return {"dirs": dict(self.dirs), "vm_memory": self.vm_memory,
                "controllers": {k: list(v) for k, v in self.controllers.items()},
                "made_parents": list(self.made_parents)}

    @property
    def unified_only(self) -> bool:
        """A pure cgroup v2 host (in the hybrid layout the unified hierarchy has no
        controllers, and the limits go to the v1 ones)."""
        return set(self.dirs) == {hierarchy.UNIFIED}

    def directory(self, controller: str) -> Path | None:
        for key, directory in self.dirs.items():
            if controller in self.controllers.get(key, ()):
                return Path(directory)
        return None

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(Path(d) / "cgroup.procs") for d in self.dirs.values())

    # --- making and removing ---------------------------------------------------------------------

    def create(self) -> None:
        """Make the directories (and parents); cpuset and v2 parents get what a child needs."""
        for key, directory in self.dirs.items():
            path = Path(directory)
            missing = [p for p in path.parents if not p.exists()]
            try:
                path.mkdir(parents=True, exist_ok=True)
                self.made_parents += [str(p) for p in missing]
            except OSError as err:
                self.remove(timeout=0)
                raise SandboxError(f"cannot create the host cgroup {path}: "
                                   f"{err.strerror}", path=str(path)) from err
            if "cpuset" in self.controllers.get(key, ()):
                _fill_cpuset(path)
            if key == hierarchy.UNIFIED and self.unified_only:
                _enable_v2_controllers(path)

    def remove(self, timeout: float = 5.0) -> list[str]:
        """Remove the leaf directories; those still busy after `timeout` are named back."""
        left = []
        deadline = time.monotonic() + timeout
        for directory in self.dirs.values():
            while True:
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.02)  # its last processes are still exiting
                        continue
                    logger.warning("host cgroup %s not removed: %s", directory, err.strerror)
                    left.append(directory)
                break
        for parent in sorted(self.made_parents, key=lambda p: p.count("/"), reverse=True):
            with contextlib.suppress(OSError):  # in use by another container by now: it stays
                os.rmdir(parent)
        return left

    # --- limits and processes --------------------------------------------------------------------

    def apply(self, resources: LinuxResources) -> None:
        """Write the limits `resources` asks for (with the VM's overhead where it counts)."""
        if self.unified_only:
            writes = settings.v2_writes(resources, self.vm_memory)
        else:
            writes = settings.v1_writes(resources, self.vm_memory)
        pending = list(writes)
        while pending:
            write = pending.pop(0)
            try:
                self._write(write)
            except OSError as err:
                # lowering memory below memsw (or raising memsw above it) needs the other first
                swap = next((w for w in pending if w.file == "memory.memsw.limit_in_bytes"), None)
                if write.file == "memory.limit_in_bytes" and swap is not None:
                    pending.remove(swap)
                    pending[:0] = [write]
                    self._write_or_raise(swap)
                    continue
                raise _refused(write, err, self.directory(write.controller)) from err

    def _write_or_raise(self, write: settings.Write) -> None:
        try:
            self._write(write)
        except OSError as err:
            raise _refused(write, err, self.directory(write.controller)) from err

    def _write(self, write: settings.Write) -> None:
        directory = self.directory(write.controller)
        if directory is None:
            logger.info("%s: the host has no %s cgroup controller; %s=%s is applied in the "
                        "guest only", write.field, write.controller, write.file, write.value)
            return
        target = directory / write.file
        if write.file == "blkio.weight" and not target.exists():
            target = directory / "blkio.bfq.weight"
        if write.optional and not target.exists():
            logger.info("%s: %s is not available on this host", write.field, write.file)
            return
        with open(target, "w") as f:
            f.write(write.value)

    def holds(self, pid: int) -> bool:
        """Whether `pid` is in this cgroup (its first hierarchy's directory)."""
        for directory in self.dirs.values():
            try:
                return str(pid) in (Path(directory) / "cgroup.procs").read_text().split()
            except OSError:
                return False
        return False

    def enter(self, pids: Iterable[int]) -> None:
        """Move processes (with all their threads) in; ones that already ended are skipped."""
        for directory in self.dirs.values():
            procs = Path(directory) / "cgroup.procs"
            for pid in pids:
                try:
                    with open(procs, "w") as f:
                        f.write(str(pid))
                except ProcessLookupError:
                    continue
                except OSError as err:
                    raise SandboxError(f"cannot move pid {pid} into the host cgroup "
                                       f"{directory}: {err.strerror}", path=directory) from err


def _refused(write: settings.Write, err: OSError, directory: Path | None) -> ConfigError:
    return ConfigError(f"{write.field}: the host cgroup {directory} refused "
                       f"{write.file}={write.value}: {err.strerror}", field=write.field)


def _fill_cpuset(path: Path) -> None:
    """A new v1 cpuset cgroup has no cpus and no mems, and takes no process until it has:
    give each level from the top down its parent's."""
    chain = []
    current = path
    while (current / "cpuset.cpus").exists() and (current.parent / "cpuset.cpus").exists():
        chain.append(current)
        current = current.parent
    for level in reversed(chain):
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (level / name).read_text().strip():
                (level / name).write_text((level.parent / name).read_text().strip())


def _enable_v2_controllers(path: Path) -> None:
    """On cgroup v2 a child gets a controller only when every ancestor delegates it."""
    ancestors = []
    current = path.parent
    while (current / "cgroup.subtree_control").exists():
        ancestors.append(current)
        if not (current / "cgroup.type").exists():
            break  # the root has no cgroup.type
        current = current.parent
    for level in reversed(ancestors):
        available = set((level / "cgroup.controllers").read_text().split())
        enabled = set((level / "cgroup.subtree_control").read_text().split())
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if wanted:
            with contextlib.suppress(OSError):  # a busy level keeps what it has
                (level / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in wanted))
