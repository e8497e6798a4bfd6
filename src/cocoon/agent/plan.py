"""From the OCI spec (as the agent received it) to the plain plans the launcher executes.

The host has already rewritten paths for the guest: `root.path` and every bind source point into
the virtio-fs share. Namespace paths from the host mean nothing in the guest and are ignored,
except `container:<id>`, which joins another container's namespace (a pod's containers); the
network namespace is the guest's own (its interfaces are the container's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cocoon.agent import caps, launch, rootfs
from cocoon.agent.container import (
    FAILED_PRECONDITION,
    NOT_FOUND,
    Container,
    ContainerConfig,
    ContainerError,
)
from cocoon.linux import syscalls as sc
from cocoon.oci import idmap
from cocoon.oci.spec import Linux, LinuxIDMapping, Process, Spec

_UNSHARED = ("mount", "uts", "ipc", "pid", "cgroup", "user")
_SHAREABLE = ("ipc", "uts", "pid", "cgroup", "user")
CONTAINER_PREFIX = "container:"


def process_plan(process: Process) -> launch.ProcessPlan:
    capabilities = None  # absent: the process keeps what it has, as under runc
    if process.capabilities is not None:
        c = process.capabilities
        capabilities = caps.CapabilitySets.from_names(c.bounding, c.effective, c.permitted,
                                                      c.inheritable, c.ambient)
    return launch.ProcessPlan(
        args=list(process.args),
        env=list(process.env),
        cwd=process.cwd,
        uid=process.user.uid,
        gid=process.user.gid,
        additional_gids=list(process.user.additional_gids),
        umask=process.user.umask,
        terminal=process.terminal,
        rlimits=[(r.type, r.soft, r.hard) for r in process.rlimits],
        capabilities=capabilities,
        no_new_privileges=process.no_new_privileges,
        oom_score_adj=process.oom_score_adj,
    )


def check_mapped(process: launch.ProcessPlan, init: launch.InitPlan) -> None:
    """ValueError if an exec's user or groups are not mapped in the container's user namespace
    (setuid would fail there with a bare EINVAL)."""
    if not init.uid_mappings:
        return
    if not idmap.is_mapped(init.uid_mappings, process.uid):
        raise ValueError(f"process.user.uid: {process.uid} is not mapped in the container's "
                         "user namespace")
    for gid in (process.gid, *process.additional_gids):
        if not idmap.is_mapped(init.gid_mappings, gid):
            raise ValueError(f"process.user: gid {gid} is not mapped in the container's user "
                             "namespace")


def _mount(m: Any) -> rootfs.Mount:
    options = tuple(m.options)
    if os.path.normpath(m.destination) == "/dev/shm" and (m.type == "bind" or "bind" in options
                                                          or "rbind" in options):
        # the engine's shm is a host tmpfs: give the container a guest one instead
        keep = tuple(o for o in options if o in ("ro", "nosuid", "nodev", "noexec"))
        return rootfs.Mount("/dev/shm", "tmpfs", "shm", (*keep, "mode=1777", "size=65536k"))
    return rootfs.Mount(m.destination, m.type, m.source, options)


def _joined(index: int, kind: str, path: str,
            containers: Mapping[str, Container]) -> tuple[int, str]:
    """The (flag, ns file) to setns into for a `container:<id>` namespace path."""
    where = f"linux.namespaces[{index}]"
    other = path.removeprefix(CONTAINER_PREFIX)
    if kind not in _SHAREABLE:
        raise ValueError(f"{where}: a {kind} namespace cannot be shared with container "
                         f"{other!r} (only {', '.join(_SHAREABLE)} can)")
    container = containers.get(other)
    if container is None:
        raise ContainerError(NOT_FOUND, f"{where}: {kind} namespace of container {other!r}: "
                                        "no such container in this sandbox")
    init = container.init
    if init is None or not init.pid or init.exited:
        raise ContainerError(FAILED_PRECONDITION, f"{where}: {kind} namespace of container "
                                                  f"{other!r}: its process has exited")
    return sc.NAMESPACE_FLAGS[kind], f"/proc/{init.pid}/ns/{sc.NAMESPACE_FILES[kind]}"


def namespace_plan(linux: Linux | None, containers: Mapping[str, Container]
                   ) -> tuple[int, list[tuple[int, str]]]:
    """CLONE_NEW* flags to unshare, and the other containers' namespaces to join first.

    A path `container:<id>` names a namespace of another container of this sandbox (how the
    containers of a pod share the pod's); any other path is the host's and means nothing here
    (the runtime has dropped those already). The mount namespace is always a new one.
    """
    flags = sc.CLONE_NEWNS
    join: list[tuple[int, str]] = []
    for index, ns in enumerate(linux.namespaces if linux is not None else ()):
        if ns.path.startswith(CONTAINER_PREFIX):
            join.append(_joined(index, ns.type, ns.path, containers))
        elif ns.type in _UNSHARED:
            flags |= sc.NAMESPACE_FLAGS[ns.type]
    return flags, join


def container_config(container_id: str, spec: Spec,
                     containers: Mapping[str, Container] | None = None) -> ContainerConfig:
    """Plans for a new container; `containers` are the sandbox's others (to join namespaces)."""
    if spec.process is None:
        raise ValueError("config.json: process: a container needs a process to run")
    linux = spec.linux
    namespaces, join = namespace_plan(linux, containers or {})
    uids, gids = _user_mappings(linux, containers or {})
    process = process_plan(spec.process)
    if linux is not None and linux.seccomp is not None:
        process.seccomp = linux.seccomp.to_dict()
    devices = []
    if linux is not None:
        for d in linux.devices:
            devices.append(rootfs.Device(
                d.path, d.type, d.major, d.minor,
                0o666 if d.file_mode is None else d.file_mode,
                d.uid or 0, d.gid or 0))
    plan = rootfs.RootfsPlan(
        rootfs=spec.root.path,
        mounts=[_mount(m) for m in spec.mounts],
        devices=devices,
        propagation=(linux.rootfs_propagation if linux else "") or "",
        readonly=spec.root.readonly,
        masked_paths=list(linux.masked_paths) if linux else [],
        readonly_paths=list(linux.readonly_paths) if linux else [],
        sysctl=dict(linux.sysctl) if linux else {},
    )
    init = launch.InitPlan(
        container_id=container_id,
        cgroup_procs=None,
        namespaces=namespaces,
        join_namespaces=join,
        hostname=spec.hostname or None,
        domainname=spec.domainname or None,
        rootfs=plan,
        process=process,
        uid_mappings=uids,
        gid_mappings=gids,
    )
    resources: dict[str, Any] = {}
    if linux is not None and linux.resources is not None:
        resources = linux.resources.to_dict()
    console = None
    if spec.process.console_size is not None:
        console = (spec.process.console_size.height, spec.process.console_size.width)
    return ContainerConfig(init=init, resources=resources, console_size=console)


def _user_mappings(linux: Linux | None, containers: Mapping[str, Container]
                   ) -> tuple[tuple[LinuxIDMapping, ...], tuple[LinuxIDMapping, ...]]:
    """The container's uid and gid mappings: the spec's for a new user namespace; for one
    joined from another container, that container's (the spec's, if any, must be the same)."""
    if linux is None:
        return (), ()
    for index, ns in enumerate(linux.namespaces):
        if ns.type != "user" or not ns.path.startswith(CONTAINER_PREFIX):
            continue
        other = containers[ns.path.removeprefix(CONTAINER_PREFIX)].config.init
        joined = (other.uid_mappings, other.gid_mappings)
        if (linux.uid_mappings or linux.gid_mappings) and \
                (linux.uid_mappings, linux.gid_mappings) != joined:
            raise ValueError(f"linux.uidMappings: differ from those of the user namespace "
                             f"linux.namespaces[{index}] joins")
        return joined
    return linux.uid_mappings, linux.gid_mappings
