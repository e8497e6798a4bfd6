"""QEMU's own mount namespace: a root of its own that holds only what the VM needs.

Built in the child between fork and exec (while it still has the capabilities to mount, which
it drops next, see `qemu._become_qemu`): a private mount namespace, a tmpfs root, and in it,
at their own paths, QEMU's programs and libraries (`/usr`, read-only), the guest's kernel, image
and firmware (read-only), the files QEMU writes by name (its console log, a template's RAM
file) and the directories it makes its sockets and pidfile in (writable: virtiofsd's socket of
a clone appears there later). Those directories are bound without their submounts, so the
sandbox's share (bind mounts of container rootfs and volumes) is not in QEMU's view. `/dev` is
a tmpfs of its own holding new nodes of the few devices QEMU opens, owned by QEMU's user (as
Firecracker's jailer makes `/dev/kvm` in its chroot: the host's node may be root's alone), and
`/proc` a procfs of its own that shows QEMU its own processes only (`hidepid=invisible`).
`pivot_root` into it and the host's tree is gone: another sandbox's directory, `/etc`, `/root`,
the state root cannot be named.

`plan` is pure (what to bind, from the VM config); `enter` does it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cocoon.hypervisor.config import VMConfig
from cocoon.linux import syscalls as sc

# the mount point of the new root: present on every Linux, and nothing QEMU needs lives there
NEW_ROOT = "/dev/shm"
OLD_ROOT = ".old-root"
READ_ONLY_DIRS = ("/usr",)
# read by libc (the loader cache) and by user-mode networking (its DNS forwarder)
READ_ONLY_FILES = ("/etc/ld.so.cache", "/etc/resolv.conf")
# made anew in QEMU's /dev (same device numbers, owned by QEMU's user)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/kvm",
           "/dev/vhost-net", "/dev/vhost-vsock", "/dev/net/tun")
# the usr-merged top-level links (/lib -> usr/lib); real directories on other hosts
TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


@dataclass(frozen=True)
class Bind:
    path: str  # bound at the same path inside
    writable: bool = False
    directory: bool = True


def plan(config: VMConfig) -> tuple[Bind, ...]:
    """What QEMU started with `config` must see, besides the system (`READ_ONLY_*`, devices,
    /proc, /sys): each path once, a directory's files not again."""
    binds: list[Bind] = []
    for path in (config.kernel, config.initrd, config.firmware_path):
        if path is not None:
            binds.append(Bind(str(path), directory=False))
    backend = config.memory_backend
    if backend is not None and backend.kind == "file" and backend.path is not None:
        # a template's RAM file, made and handed over before QEMU starts (`qemu`)
        binds.append(Bind(str(backend.path), writable=True, directory=False))
    binds.append(Bind(str(config.console_log), writable=True, directory=False))
    for directory in (*creation_dirs(config), *(share.socket.parent for share in config.shares)):
        binds.append(Bind(str(directory), writable=True))
    kept: list[Bind] = []
    directories = [b.path for b in binds if b.directory]
    for bind in binds:
        inside = any(bind.path.startswith(d.rstrip("/") + "/") for d in directories
                     if d != bind.path)
        if not inside and bind.path not in [k.path for k in kept]:
            kept.append(bind)
    return tuple(kept)


def creation_dirs(config: VMConfig) -> tuple[Path, ...]:
    """The directories QEMU creates files in (its QMP and agent sockets, its pidfile): the
    ones made its user's (`vmuser`), each once."""
    places = (config.qmp_socket, config.agent_socket, config.pidfile)
    return tuple(dict.fromkeys(p.parent for p in places if p is not None))


def entry(config: VMConfig) -> Callable[[int | None], None]:
    """A preexec hook that puts the child into QEMU's own root (see the module docstring);
    called with QEMU's uid (None: QEMU stays root), which owns its device nodes."""
    binds = plan(config)
    system = [Bind(d) for d in READ_ONLY_DIRS if os.path.isdir(d)]
    system += [Bind(f, directory=False) for f in READ_ONLY_FILES if os.path.exists(f)]
    devices = {d: os.stat(d) for d in DEVICES if os.path.exists(d)}
    links = {name: os.readlink(name) for name in TOP_LEVEL if os.path.islink(name)}
    system += [Bind(name) for name in TOP_LEVEL
               if name not in links and os.path.isdir(name)]

    def enter(owner: int | None) -> None:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        sc.mount("tmpfs", NEW_ROOT, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
        for bind in (*system, *binds):
            _bind(bind)
        for name, target in links.items():
            os.symlink(target, NEW_ROOT + name)
        _make_dev(devices, owner)
        _mount_proc()
        _bind(Bind("/sys"))
        os.mkdir(f"{NEW_ROOT}/{OLD_ROOT}")
        os.chdir(NEW_ROOT)
        sc.pivot_root(".", OLD_ROOT)
        os.chdir("/")
        sc.umount2(f"/{OLD_ROOT}", sc.MNT_DETACH)
        os.rmdir(f"/{OLD_ROOT}")
        sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)
        sc.mount(None, "/dev", None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NOEXEC)

    return enter


def _make_dev(devices: dict[str, os.stat_result], owner: int | None) -> None:
    """QEMU's /dev: a tmpfs (device nodes work there, unlike on the root's) with a new node
    for each device, its host permissions plus read-write for its owner, QEMU's user. Where
    no node can be made (no CAP_MKNOD), the host's node is bound instead."""
    dev = NEW_ROOT + "/dev"
    os.makedirs(dev, exist_ok=True)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=0755,size=64k")
    for path, st in devices.items():
        target = NEW_ROOT + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.mknod(target, stat.S_IFCHR | stat.S_IMODE(st.st_mode) | 0o600, st.st_rdev)
        except PermissionError:
            _bind(Bind(path, writable=True, directory=False))
            continue
        if owner is not None:
            os.chown(target, owner, owner)


def _mount_proc() -> None:
    """A procfs of QEMU's own in which processes of other users are invisible; the host's
    /proc bound instead where the kernel refuses it (no per-mount proc options before 5.8:
    there the option would apply to the host's /proc too, so it is refused, not given)."""
    target = NEW_ROOT + "/proc"
    os.makedirs(target, exist_ok=True)
    try:
        sc.mount("proc", target, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "hidepid=invisible")
    except OSError:
        _bind(Bind("/proc", writable=True))


def _bind(bind: Bind) -> None:
    target = NEW_ROOT + bind.path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if bind.directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    sc.mount(bind.path, target, None, sc.MS_BIND)
    if not bind.writable:
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID)


def visible_paths(pid: int) -> list[str]:
    """For tests and diagnosis: the mount points in QEMU's namespace."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]
