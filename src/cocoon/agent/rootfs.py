"""Building a container's root filesystem in the guest, as runc does on a host.

Runs in the container's forked setup process, inside its new mount namespace: the spec's mounts in
order, the default devices, `pivot_root`, then masked and read-only paths and a read-only root.
Every destination is resolved inside the rootfs without following symlinks out of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cocoon.linux import syscalls as sc
from cocoon.linux.mounts import FLAG_OPTIONS, IGNORED, PROPAGATION
from cocoon.linux.paths import secure_join


@dataclass(frozen=True)
class MountOptions:
    flags: int
    propagation: tuple[int, ...]
    data: str


def parse_options(options: Iterable[str]) -> MountOptions:
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        elif option in IGNORED:
            continue
        else:
            data.append(option)
    return MountOptions(flags, tuple(propagation), ",".join(data))


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Device:
    path: str
    type: str  # "c", "b", "u" or "p"
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


DEFAULT_DEVICES: tuple[Device, ...] = (
    Device("/dev/null", "c", 1, 3), Device("/dev/zero", "c", 1, 5),
    Device("/dev/full", "c", 1, 7), Device("/dev/random", "c", 1, 8),
    Device("/dev/urandom", "c", 1, 9), Device("/dev/tty", "c", 5, 0),
)
DEFAULT_LINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
    ("/proc/kcore", "/dev/core"),
)


def _ensure_target(path: str, as_file: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if as_file:
        with open(path, "a"):
            pass
    else:
        os.mkdir(path, 0o755)


# statvfs flags a mount copied into a user namespace's mount namespace keeps locked
_LOCKABLE = ((os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID),
             (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC))


def remount(target: str, flags: int) -> None:
    """Bind-remount `target` with `flags`. In a user namespace the kernel refuses (EPERM) to
    clear the nosuid, nodev, noexec or read-only flag of a mount that came from the guest's
    namespace (a bind of the share, of /sys): the flags it has are then kept, as runc does."""
    try:
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags)
    except OSError as err:
        if err.errno != errno.EPERM:
            raise
        have = os.statvfs(target).f_flag
        locked = sum(ms for st, ms in _LOCKABLE if have & st)
        if locked & ~flags == 0:
            raise
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | locked)


# file systems a process in a user namespace cannot mount fresh unless it owns the namespace
# they belong to (the guest's network, ipc or cgroup namespace): bound from the guest instead
_BIND_INSTEAD = {"sysfs": "/sys", "mqueue": "/dev/mqueue", "cgroup2": "/sys/fs/cgroup"}


def mount_one(rootfs: str, mount: Mount) -> None:
    """Mount one spec entry under `rootfs`."""
    opts = parse_options(mount.options)
    target = secure_join(rootfs, mount.destination)
    is_bind = bool(opts.flags & sc.MS_BIND) or mount.type == "bind"
    if is_bind:
        if not os.path.exists(mount.source):
            raise OSError(errno.ENOENT, f"bind mount source {mount.source} does not exist",
                          mount.source)
        _ensure_target(target, as_file=not os.path.isdir(mount.source))
        sc.mount(mount.source, target, None,
                 sc.MS_BIND | (opts.flags & sc.MS_REC))
        # bind mounts ignore other flags on the first call: remount to apply them
        flags = opts.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if flags:
            remount(target, flags)
    else:
        _ensure_target(target, as_file=False)
        fstype = mount.type or "none"
        if fstype == "cgroup":
            # the guest runs cgroup v2 only: a v1 request gets the unified hierarchy
            fstype = "cgroup2"
        data = opts.data
        if fstype == "cgroup2":
            data = ""
        try:
            sc.mount(mount.source or fstype, target, fstype, opts.flags & ~sc.MS_REMOUNT,
                     data or None)
        except OSError as err:
            # sysfs and mqueue cannot be mounted fresh without their namespaces, nor cgroup2
            # in a user namespace without a cgroup namespace: bind the guest's instead
            if err.errno in (errno.EPERM, errno.EBUSY) and fstype in _BIND_INSTEAD:
                sc.mount(_BIND_INSTEAD[fstype], target, None, sc.MS_BIND | sc.MS_REC)
                remount(target, opts.flags & ~sc.MS_REMOUNT)
            else:
                raise
    for propagation in opts.propagation:
        sc.mount(None, target, None, propagation)


def reach_sources(rootfs: str, mounts: Iterable[Mount]) -> None:
    """Open the rootfs and every bind source once, in the agent's own mount namespace.

    Each is a submount of the guest's share (virtio-fs announces the host's mounts), mounted
    automatically by the first lookup that crosses it, in the namespace of the process that
    looks. Done here, before a container's namespace is copied from the agent's, the submount
    is a peer in the agent's shared tree, so the container's copy is its slave (a `slave`
    volume shows `master:N`); done first in the container's namespace it would be private.
    Only directories can be submounts; what is not one, or cannot be opened, is left to the
    container's setup (which reports it by name).
    """
    for path in (rootfs, *(m.source for m in mounts if _is_bind(m))):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        os.close(fd)


def _is_bind(mount: Mount) -> bool:
    return mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options


def _is_mounted_at(mounts: Sequence[Mount], destination: str) -> bool:
    return any(os.path.normpath(m.destination) == destination for m in mounts)


def _bind_device(device: Device, path: str) -> None:
    """A device node bound from the guest's own (a user namespace may not mknod), as runc
    does in a user namespace; the node keeps the guest's mode and owner."""
    if not os.path.exists(device.path):
        raise OSError(errno.ENOENT, f"linux.devices: {device.path}: in a user namespace devices "
                                    "are bound from the guest's, and the guest has none there",
                      device.path)
    with open(path, "a"):
        pass
    sc.mount(device.path, path, None, sc.MS_BIND)


def create_devices(rootfs: str, devices: Iterable[Device], mounts: Sequence[Mount],
                   userns: bool = False) -> None:
    """The default devices plus the spec's, made with mknod (the guest is ours to do that),
    or bound from the guest's /dev in a user namespace."""
    if not _is_mounted_at(mounts, "/dev"):
        # no /dev mount in the spec: give the container a private tmpfs (what runc expects
        # the config to ask for, done here so /dev is never the rootfs directory)
        dev = secure_join(rootfs, "/dev")
        os.makedirs(dev, exist_ok=True)
        sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
    seen: set[str] = set()
    for device in [*devices, *DEFAULT_DEVICES]:
        if device.path in seen:
            continue
        seen.add(device.path)
        path = secure_join(rootfs, device.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                "p": stat.S_IFIFO}.get(device.type)
        if kind is None:
            raise OSError(errno.EINVAL, f"device {device.path}: unknown type {device.type!r}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if userns:
            _bind_device(device, path)
            continue
        os.mknod(path, kind | (device.file_mode & 0o7777),
                 os.makedev(device.major, device.minor))
        os.chmod(path, device.file_mode & 0o7777)
        os.chown(path, device.uid, device.gid)
    for target, link in DEFAULT_LINKS:
        path = secure_join(rootfs, link)
        if not os.path.lexists(path):
            os.symlink(target, path)
    ptmx = secure_join(rootfs, "/dev/ptmx")
    if not os.path.lexists(ptmx) or not os.path.islink(ptmx):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ptmx)
        os.symlink("pts/ptmx", ptmx)


def pivot(rootfs: str) -> None:
    """Make `rootfs` the root: pivot_root(".", ".") and detach the old root from under it.

    When the guest root is the initramfs, pivot_root refuses (EINVAL: the current root is
    rootfs); then the rootfs is moved onto "/" and chrooted into, as runc's --no-pivot does.
    """
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(rootfs)
        try:
            sc.pivot_root(".", ".")
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            sc.mount(rootfs, "/", None, sc.MS_MOVE)
            os.chroot(".")
            os.chdir("/")
            return
        # the old root is now stacked on top of the new one at "/". Reach it through a
        # descriptor: "." is the new root's own mount, below it, and making that a slave
        # would undo the propagation the spec's mounts asked for (a shared mount with no
        # other peer becomes private). Make the old root a slave, so that its unmounting
        # does not reach the guest's namespace, then detach it.
        os.fchdir(old_root)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)


def mask_paths(paths: Iterable[str]) -> None:
    """Hide paths from the container: /dev/null over files, an empty read-only tmpfs over dirs."""
    for path in paths:
        try:
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            if is_dir:
                sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, None)
            else:
                sc.mount("/dev/null", path, None, sc.MS_BIND)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise


def readonly_paths(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
            remount(path, sc.MS_RDONLY | sc.MS_REC)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise


def readonly_root() -> None:
    remount("/", sc.MS_RDONLY)


def set_sysctl(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/")
        with open(path, "w") as f:
            f.write(value)


@dataclass
class RootfsPlan:
    """Everything `prepare` needs, in plain values (the caller converts from the OCI spec)."""

    rootfs: str
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    propagation: str = ""
    readonly: bool = False
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    sysctl: dict[str, str] = field(default_factory=dict)
    console: bool = False  # make /dev/console for the terminal the init binds onto it
    userns: bool = False  # set up from inside a user namespace: devices are bound, not made


def prepare(plan: RootfsPlan) -> None:
    """Build the container's root in the current (new) mount namespace and enter it."""
    sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
    sc.mount(plan.rootfs, plan.rootfs, None, sc.MS_BIND | sc.MS_REC)
    for index, mount in enumerate(plan.mounts):
        try:
            mount_one(plan.rootfs, mount)
        except OSError as err:
            # name the entry and its container path, not the guest's path to the rootfs
            reason = (err.strerror or str(err)).replace(plan.rootfs.rstrip("/") + "/", "/")
            raise OSError(err.errno, f"mounts[{index}] {mount.destination}: {reason}") from err
    create_devices(plan.rootfs, plan.devices, plan.mounts, plan.userns)
    if plan.console:
        _ensure_target(secure_join(plan.rootfs, "/dev/console"), as_file=True)
    pivot(plan.rootfs)
    if plan.propagation:
        sc.mount(None, "/", None, PROPAGATION[plan.propagation])
    set_sysctl(plan.sysctl)
    mask_paths(plan.masked_paths)
    readonly_paths(plan.readonly_paths)
    if plan.readonly:
        readonly_root()
