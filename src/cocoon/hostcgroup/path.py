"""Which cgroup a container's `cgroupsPath` names on the host, as runc reads it.

- cgroupfs driver: an absolute path is taken from the root of every hierarchy; a relative one
  (and an empty one, which means the container's id) from the cgroup the runtime itself sits in,
  hierarchy by hierarchy. `..` cannot climb out of either.
- systemd driver (`--systemd-cgroup`): `slice:prefix:name` is the unit `prefix-name.scope` (or
  `name` when it is a slice) in `slice`, whose dashes nest it (`a-b.slice` is
  `/a.slice/a-b.slice`); an empty slice is `system.slice`, an empty path
  `system.slice:cocoon:<id>`. Cocoon does not ask systemd over D-Bus: it makes the same
  directories through cgroupfs, which is what a host without systemd as PID 1 has anyway.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from cocoon.errors import ConfigError

FIELD = "linux.cgroupsPath"


@dataclass(frozen=True)
class CgroupPath:
    """An absolute cgroup path, or one relative to where the runtime sits in each hierarchy."""

    path: str
    relative: bool

    def under(self, own: str) -> str:
        """The absolute path in a hierarchy where the runtime's cgroup is `own`."""
        if not self.relative:
            return self.path
        return posixpath.join(own or "/", self.path)


def _clean(path: str) -> str:
    """`path` rooted and normalised, so `..` stops at the root (runc's CleanPath)."""
    return posixpath.normpath(posixpath.join("/", path))


def resolve(cgroups_path: str, container_id: str, systemd: bool = False) -> CgroupPath:
    if systemd:
        return CgroupPath(systemd_path(cgroups_path or f"system.slice:cocoon:{container_id}"),
                          relative=False)
    if not cgroups_path:
        return CgroupPath(_clean(container_id).lstrip("/"), relative=True)
    if posixpath.isabs(cgroups_path):
        return CgroupPath(_clean(cgroups_path), relative=False)
    cleaned = _clean(cgroups_path).lstrip("/")
    if not cleaned:
        raise ConfigError(f"config.json: {FIELD}: {cgroups_path!r} names no cgroup",
                          field=FIELD)
    return CgroupPath(cleaned, relative=True)


def looks_systemd(cgroups_path: str) -> bool:
    """Whether a path is in the systemd driver's form (containerd's shims tell the driver by
    the form, as Kata's does: containerd passes its SystemdCgroup setting only to runc)."""
    return cgroups_path.count(":") == 2 and not cgroups_path.startswith("/")


def expand_slice(name: str) -> str:
    """`a-b-c.slice` as the path systemd gives it: `/a.slice/a-b.slice/a-b-c.slice`."""
    if name in ("", "-.slice"):
        return "/"
    if not name.endswith(".slice") or "/" in name:
        raise ConfigError(f"config.json: {FIELD}: {name!r} is not a systemd slice name "
                          "(expected NAME.slice)", field=FIELD)
    stem = name.removesuffix(".slice")
    if stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise ConfigError(f"config.json: {FIELD}: invalid slice name {name!r}", field=FIELD)
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))


def systemd_path(value: str) -> str:
    """The cgroup path of a systemd driver's `slice:prefix:name`."""
    parts = value.split(":")
    if len(parts) != 3:
        raise ConfigError(f"config.json: {FIELD}: {value!r}: with the systemd cgroup driver "
                          "the path is slice:prefix:name", field=FIELD)
    slice_name, prefix, name = parts
    if not name or "/" in name or "/" in prefix:
        raise ConfigError(f"config.json: {FIELD}: {value!r}: expected slice:prefix:name with "
                          "a name and no slashes", field=FIELD)
    parent = expand_slice(slice_name or "system.slice")
    unit = name if name.endswith(".slice") else \
        (f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    return posixpath.join(parent, unit)
