"""The container's spec as the guest must see it.

The host's config.json names host paths; in the guest the rootfs and every bind source live in
the virtio-fs share. This module exposes them in the share (bind mounts on the host, read-only
where the spec says so) and returns the spec rewritten with guest paths. Namespace paths and the
network namespace belong to the host and are dropped (the guest's network is the container's);
hooks run on the host and are removed from what the guest gets.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from cocoon.errors import ConfigError
from cocoon.linux.paths import make_in_root
from cocoon.oci import idmap
from cocoon.oci.spec import Linux, LinuxNamespace, Mount, Root, Spec
from cocoon.runtime import sizing
from cocoon.sandbox.share import Share, host_propagation

logger = logging.getLogger("cocoon.runtime.guestspec")

# bind sources the guest has its own of: never exported from the host
GUEST_LOCAL_PREFIXES = ("/proc", "/sys", "/dev")
GUEST_NAMESPACES = ("pid", "ipc", "uts", "mount", "cgroup", "user")
# a namespace path "container:<id>" asks the agent to join that guest container's namespace
# (how the containers of a pod share the pod's); every other path is the host's and is dropped
CONTAINER_NS_PREFIX = "container:"


def on_host_network(spec: Spec) -> bool:
    """Whether the container asks for no network namespace at all: the host's network."""
    return spec.linux is None or spec.linux.namespace("network") is None


def is_bind(mount: Mount) -> bool:
    return mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options


def _guest_local(source: str) -> bool:
    normalized = os.path.normpath(source)
    return any(normalized == p or normalized.startswith(p + "/") for p in GUEST_LOCAL_PREFIXES)


def _exported(mount: Mount) -> bool:
    """A bind mount whose source the host exports through the share."""
    destination = os.path.normpath(mount.destination)
    return is_bind(mount) and destination != "/dev/shm" and not _guest_local(mount.source)


HOST_NAME_MAX = 64


def check(spec: Spec, rootfs: Path) -> None:
    """Refuse, without touching anything, what `guest_spec` would refuse: so that a bad bundle
    fails before a VM is started for it."""
    if spec.hooks is not None and (spec.hooks.create_container or spec.hooks.start_container):
        kind = "createContainer" if spec.hooks.create_container else "startContainer"
        raise ConfigError(f"config.json: hooks.{kind}: hooks that run inside the container's "
                          "namespaces cannot run in a VM guest", field=f"hooks.{kind}")
    if len(spec.hostname.encode()) > HOST_NAME_MAX:
        raise ConfigError(f"config.json: hostname: longer than {HOST_NAME_MAX} bytes (the "
                          "guest kernel's limit)", field="hostname")
    if not rootfs.is_dir():
        raise ConfigError(f"root.path: rootfs {rootfs} does not exist or is not a directory",
                          path=str(rootfs))
    for index, mount in enumerate(spec.mounts):
        if not _exported(mount):
            continue
        source = Path(mount.source)
        if not source.is_absolute():
            raise ConfigError(f"config.json: mounts[{index}].source: {mount.source!r} is not "
                              "an absolute path", field=f"mounts[{index}].source")
        if not source.exists():
            raise ConfigError(f"mounts[{index}].source: {source} does not exist",
                              path=str(source))
    if spec.linux is not None:
        _check_user_namespace(spec)
        _check_host_namespaces(spec.linux)
    sizing.check_memory(spec)


def guest_spec(spec: Spec, rootfs: Path, share: Share, container_id: str) -> Spec:
    """Expose the rootfs and volumes in the share; return the spec with guest paths."""
    check(spec, rootfs)
    spec = absolute_destinations(spec)
    owner = _mapped_root(spec)
    if spec.root.readonly or owner is not None:
        _make_mount_points(spec, rootfs, owner)
    guest_root = share.expose_rootfs(container_id, rootfs, readonly=spec.root.readonly)
    mounts: list[Mount] = []
    for index, mount in enumerate(spec.mounts):
        if _exported(mount):
            note = one_way_note(index, mount)
            if note:
                logger.warning("%s", note)
            source = Path(mount.source)
            guest_source = share.expose_mount(container_id, index, source,
                                              readonly="ro" in mount.options,
                                              propagation=host_propagation(mount.options))
            mount = dataclasses.replace(mount, source=guest_source)
        mounts.append(mount)
    linux = spec.linux
    if linux is not None:
        namespaces = tuple(
            LinuxNamespace(type=ns.type,
                           path=ns.path if ns.path.startswith(CONTAINER_NS_PREFIX) else "")
            for ns in linux.namespaces if ns.type in GUEST_NAMESPACES)
        linux = dataclasses.replace(linux, namespaces=namespaces, cgroups_path="")
    return dataclasses.replace(spec, root=Root(path=guest_root, readonly=spec.root.readonly),
                               mounts=tuple(mounts), hooks=None, linux=linux)


def absolute_destinations(spec: Spec) -> Spec:
    """Mount destinations made absolute. The runtime spec says a destination SHOULD be
    absolute and takes a relative one as relative to "/", deprecated (runtime-spec#1225);
    runc warned from 1.0 and reads it so from 1.2 (runc#4013). So does Cocoon, saying so in
    the log, so that the guest (which compares destinations) only ever sees absolute ones."""
    mounts = []
    for index, mount in enumerate(spec.mounts):
        if not mount.destination.startswith("/"):
            absolute = os.path.normpath("/" + mount.destination)
            logger.warning("config.json: mounts[%d].destination %r is relative (deprecated): "
                           "taken as %s", index, mount.destination, absolute)
            mount = dataclasses.replace(mount, destination=absolute)
        mounts.append(mount)
    return dataclasses.replace(spec, mounts=tuple(mounts))


def one_way_note(index: int, mount: Mount) -> str | None:
    """What a `shared` volume cannot do here, or None: its propagation works in the guest
    and from the host inward, but a mount made in the container cannot cross the VM to the
    host (docs/limitations.md). Said in the log, not refused: engines ask for `rshared`
    mostly to see the host's later mounts, and those do arrive."""
    if not any(option in ("shared", "rshared") for option in mount.options):
        return None
    return (f"mounts[{index}] {mount.destination}: shared propagation stops at the VM: "
            f"mounts made in the container do not reach the host's {mount.source}")


def _mapped_root(spec: Spec) -> tuple[int, int] | None:
    """The host uid and gid of the container's root in its user namespace, if the config maps
    one (a namespace joined from another container comes with that one's mappings: podman)."""
    linux = spec.linux
    if linux is None or not any(ns.type == "user" for ns in linux.namespaces):
        return None
    uid = next((m.host_id - m.container_id for m in linux.uid_mappings
                if m.container_id <= 0 < m.container_id + m.size), None)
    gid = next((m.host_id - m.container_id for m in linux.gid_mappings
                if m.container_id <= 0 < m.container_id + m.size), None)
    return None if uid is None or gid is None else (uid, gid)


def _make_mount_points(spec: Spec, rootfs: Path, owner: tuple[int, int] | None) -> None:
    """Create the missing mount points, as runc does before it makes the root read-only: the
    guest gets a read-only rootfs read-only from the start and cannot. In a user namespace the
    container's root could, but virtiofsd checks its writes with its ids, not its capabilities
    (a directory of mode 0555 is closed to it): they are made here too, owned by that root
    (`owner`, host ids), as runc would make them from inside the namespace.

    Every step is resolved by the kernel inside the rootfs (openat2, RESOLVE_IN_ROOT): a
    rootfs whose /etc is a symlink to the host's /etc gets nothing made in the host's /etc."""
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # `check` has said what is wrong with the rootfs
    try:
        covered: list[str] = []
        for mount in spec.mounts:
            destination = os.path.normpath("/" + mount.destination)
            if any(destination.startswith(c.rstrip("/") + "/") for c in covered):
                continue  # inside an earlier mount: the guest makes it there
            covered.append(destination)
            as_file = is_bind(mount) and os.path.isfile(mount.source)
            try:  # what stays missing (or loops), the guest reports by name
                os.close(make_in_root(root_fd, destination, as_file=as_file, owner=owner))
            except OSError as err:
                logger.debug("mount point %s not made in %s: %s", destination, rootfs, err)
    finally:
        os.close(root_fd)


# A namespace missing from linux.namespaces means the runtime's own, the host's: engines write
# that for --pid host / --ipc host and Kubernetes for hostPID / hostIPC. A VM cannot share them.
HOST_NAMESPACES = {
    "pid": "the host's pid namespace (--pid host, hostPID)",
    "ipc": "the host's IPC namespace (--ipc host, hostIPC)",
}


def _check_host_namespaces(linux: Linux) -> None:
    present = {namespace.type for namespace in linux.namespaces}
    for kind, meaning in HOST_NAMESPACES.items():
        if kind not in present:
            raise ConfigError(f"config.json: linux.namespaces has no {kind} namespace, which "
                              f"means {meaning}: a container in a VM cannot share it",
                              field="linux.namespaces")


def _check_user_namespace(spec: Spec) -> None:
    """The guest kernel makes the container's user namespace: its mappings map guest ids, which
    are the host's (virtiofsd passes file owners through unchanged)."""
    try:
        idmap.check_user_namespace(spec)
    except ValueError as err:
        field = str(err).partition(":")[0]
        raise ConfigError(f"config.json: {err}", field=field) from None
