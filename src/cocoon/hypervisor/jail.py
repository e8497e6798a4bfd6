"""QEMU's own mount namespace: a root of its own that holds only what the VM needs.

Built in the child between fork and exec (while it still has the capabilities to mount, which
it drops next, see `qemu._capability_drop`): a private mount namespace, a tmpfs root, and in it,
at their own paths, QEMU's programs and libraries (`/usr`, read-only), a few device nodes, the
guest's kernel, image and firmware (read-only), and the directories of the VM's sockets, log
and pidfile (writable: QEMU creates its sockets there, and virtiofsd's socket of a clone appears
there later). Those directories are bound without their submounts, so the sandbox's share
(bind mounts of container rootfs and volumes) is not in QEMU's view. `pivot_root` into it and
the host's tree is gone: another sandbox's directory, `/etc`, `/root`, the state root cannot
be named.

`plan` is pure (what to bind, from the VM config); `enter` does it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cocoon.hypervisor.config import VMConfig
from cocoon.linux import syscalls as sc

# the mount point of the new root: present on every Linux, and nothing QEMU needs lives there
NEW_ROOT = "/dev/shm"
OLD_ROOT = ".old-root"
READ_ONLY_DIRS = ("/usr",)
# read by libc (the loader cache) and by user-mode networking (its DNS forwarder)
READ_ONLY_FILES = ("/etc/ld.so.cache", "/etc/resolv.conf")
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
        if backend.share:  # a template being made: QEMU creates its RAM file
            binds.append(Bind(str(backend.path.parent), writable=True))
        else:
            binds.append(Bind(str(backend.path), writable=True, directory=False))
    places = [config.qmp_socket, config.agent_socket, config.console_log, config.pidfile,
              *(share.socket for share in config.shares)]
    for place in places:
        if place is not None:
            binds.append(Bind(str(place.parent), writable=True))
    kept: list[Bind] = []
    directories = [b.path for b in binds if b.directory]
    for bind in binds:
        inside = any(bind.path.startswith(d.rstrip("/") + "/") for d in directories
                     if d != bind.path)
        if not inside and bind.path not in [k.path for k in kept]:
            kept.append(bind)
    return tuple(kept)


def entry(config: VMConfig) -> Callable[[], None]:
    """A preexec hook that puts the child into QEMU's own root (see the module docstring)."""
    binds = plan(config)
    system = [Bind(d) for d in READ_ONLY_DIRS if os.path.isdir(d)]
    system += [Bind(f, directory=False) for f in READ_ONLY_FILES if os.path.exists(f)]
    system += [Bind(d, writable=True, directory=False) for d in DEVICES if os.path.exists(d)]
    links = {name: os.readlink(name) for name in TOP_LEVEL if os.path.islink(name)}
    system += [Bind(name) for name in TOP_LEVEL
               if name not in links and os.path.isdir(name)]

    def enter() -> None:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        sc.mount("tmpfs", NEW_ROOT, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
        for bind in (*system, *binds):
            _bind(bind)
        for name, target in links.items():
            os.symlink(target, NEW_ROOT + name)
        for special, flags in (("/proc", 0), ("/sys", sc.MS_RDONLY)):
            _bind(Bind(special, writable=not flags))
        os.mkdir(f"{NEW_ROOT}/{OLD_ROOT}")
        os.chdir(NEW_ROOT)
        sc.pivot_root(".", OLD_ROOT)
        os.chdir("/")
        sc.umount2(f"/{OLD_ROOT}", sc.MNT_DETACH)
        os.rmdir(f"/{OLD_ROOT}")
        sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)

    return enter


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
