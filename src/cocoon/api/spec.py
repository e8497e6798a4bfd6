"""The container a sandbox holds, as an OCI spec: the runtime's defaults (`runc spec`'s),
its root, its limits, and the sandbox's own busybox bound in read-only.

The container's first process only holds the container open (`busybox sleep`): what the caller
runs are processes added to it, as `cocoon exec` adds them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon.errors import ConfigError
from cocoon.oci.default import default_spec
from cocoon.oci.spec import Process, Spec, parse_spec

BUSYBOX = "/dev/.cocoon/busybox"  # in every sandbox's container, read-only
HOLD = (BUSYBOX, "sleep", "2147483647")
MIB = 1 << 20


@dataclass(frozen=True)
class Mount:
    """A host directory or file bound into the sandbox at `target` (read-only unless asked)."""

    source: str | os.PathLike[str]
    target: str
    readonly: bool = True


def env_list(env: Mapping[str, str]) -> tuple[str, ...]:
    for key in env:
        if not key or "=" in key or "\0" in key:
            raise ConfigError(f"env: {key!r} is not a variable name", field="env")
    return tuple(f"{k}={v}" for k, v in env.items())


def merge_env(base: Sequence[str], extra: Mapping[str, str] | None) -> tuple[str, ...]:
    merged = dict(item.partition("=")[::2] for item in base)
    merged.update(extra or {})
    return env_list(merged)


def container_spec(*, rootfs: Path, busybox: Path, env: Sequence[str], cwd: str,
                   memory_mib: int | None, mounts: Sequence[Mount], network: bool,
                   hostname: str) -> Spec:
    data: dict[str, Any] = default_spec()
    data["process"].update(terminal=False, args=list(HOLD), env=list(env), cwd=cwd)
    data["root"] = {"path": str(rootfs), "readonly": False}
    data["hostname"] = hostname
    data["mounts"].append({"destination": BUSYBOX, "type": "bind", "source": str(busybox),
                           "options": ["bind", "ro", "nosuid", "nodev"]})
    for mount in mounts:
        source = Path(mount.source).absolute()
        if not source.exists():
            raise ConfigError(f"mounts: {source} does not exist", path=str(source))
        if not mount.target.startswith("/"):
            raise ConfigError(f"mounts: the target {mount.target!r} of {source} is not an "
                              "absolute path", field="mounts")
        data["mounts"].append({"destination": mount.target, "type": "bind",
                               "source": str(source),
                               "options": ["rbind", "ro" if mount.readonly else "rw"]})
    if memory_mib is not None:
        if memory_mib < 8:
            raise ConfigError(f"memory_mib: {memory_mib} MiB is too little for any process "
                              "(8 MiB at least)", field="memory_mib")
        data["linux"]["resources"]["memory"] = {"limit": memory_mib * MIB,
                                                "swap": memory_mib * MIB}
    if network:  # no network namespace: the VM's own network, a user-mode NIC (see design.md)
        data["linux"]["namespaces"] = [n for n in data["linux"]["namespaces"]
                                       if n["type"] != "network"]
    return parse_spec(data, "the sandbox's spec")


def process(spec: Spec, args: Sequence[str], *, env: Sequence[str] | None = None,
            cwd: str | None = None, terminal: bool = False) -> Process:
    """A process for the container of `spec`, like its first one but running `args`."""
    assert spec.process is not None
    if isinstance(args, str | bytes) or not args:
        raise ConfigError("args: a process needs a non-empty list of arguments, not "
                          f"{args!r}", field="args")
    return dataclasses.replace(spec.process, args=tuple(str(a) for a in args),
                               env=tuple(env) if env is not None else spec.process.env,
                               cwd=cwd or spec.process.cwd, terminal=terminal)
