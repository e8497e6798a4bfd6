"""The host's cgroup hierarchies: where each is mounted and where a process sits in it.

Read from /proc/self/mountinfo and /proc/PID/cgroup, so the three layouts a host may have are
told apart by what is mounted, not by guessing: cgroup v1 (one hierarchy per controller or
group of controllers, `cpu,cpuacct` co-mounted or not, named ones such as `name=systemd`),
cgroup v2 (one unified hierarchy), and the hybrid of both (v1 controllers plus an unified
hierarchy with no controllers, as on this kind of host).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

UNIFIED = ""  # the key of the v2 hierarchy, as /proc/PID/cgroup names it ("0::/path")


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy. `key` is its controller list as /proc/PID/cgroup writes it
    ("memory", "cpu,cpuacct", "name=systemd"; "" for v2)."""

    key: str
    mountpoint: Path
    root: str = "/"  # the cgroup the mount shows at its mount point (not "/" in a container)

    @property
    def version(self) -> int:
        return 2 if self.key == UNIFIED else 1

    @property
    def controllers(self) -> frozenset[str]:
        """The controllers this hierarchy carries (v1: from its key; v2: the ones enabled)."""
        if self.version == 1:
            return frozenset(c for c in self.key.split(",") if c and not c.startswith("name="))
        try:
            return frozenset((self.mountpoint / "cgroup.controllers").read_text().split())
        except OSError:
            return frozenset()

    def directory(self, cgroup: str) -> Path:
        """The directory of `cgroup` (an absolute cgroup path) under this mount."""
        relative = posixpath.relpath(posixpath.normpath(cgroup), self.root)
        if relative == ".":
            return self.mountpoint
        if relative.startswith(".."):
            raise ValueError(f"cgroup {cgroup} is outside {self.mountpoint} "
                             f"(which shows {self.root})")
        return self.mountpoint / relative


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {hierarchy key: cgroup path}."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape")


def parse_mountinfo(text: str, keys: set[str]) -> list[Hierarchy]:
    """The cgroup hierarchies among the mounts in `text` (a /proc/PID/mountinfo).

    A v1 mount is matched to the key whose controllers its options name: mount options carry
    other words too (rw, xattr, clone_children, release_agent=...). `keys` are the hierarchy
    keys of /proc/self/cgroup. The first mount of each hierarchy wins.
    """
    found: dict[str, Hierarchy] = {}
    for line in text.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        if dash + 3 >= len(fields) or len(fields) < 5:
            continue
        fstype, options = fields[dash + 1], set(fields[dash + 3].split(","))
        root, mountpoint = _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup2":
            key = UNIFIED
        elif fstype == "cgroup":
            matches = [k for k in keys if k and set(k.split(",")) <= options]
            if not matches:
                continue
            key = max(matches, key=len)
        else:
            continue
        found.setdefault(key, Hierarchy(key, mountpoint, root))
    return list(found.values())


def hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies mounted in this process's mount namespace."""
    own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text(), set(own))


def own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """Where a process sits: {hierarchy key: cgroup path}."""
    return parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
