"""What the agent does first as PID 1 of the guest: the basic mounts, modules, loopback, cgroups.

Everything here runs once, before the event loop starts, and must work with nothing but the
initramfs: no udev, no modprobe, no shell. Failures are logged and, where the agent can live
without the thing (a module that is not needed on this hypervisor), tolerated.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import time
from pathlib import Path

from cocoon.linux import syscalls

logger = logging.getLogger("cocoon.agent.pid1")

MODULE_LIST = Path("/etc/cocoon/modules")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids", "hugetlb", "misc")

_BASIC_MOUNTS: tuple[tuple[str, str, str, int, str | None], ...] = (
    # source, target, fstype, flags, data
    ("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, None),
    ("sysfs", "/sys", "sysfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, None),
    ("devtmpfs", "/dev", "devtmpfs", syscalls.MS_NOSUID, "mode=0755"),
    ("devpts", "/dev/pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
     "gid=5,mode=0620,ptmxmode=0666"),
    ("tmpfs", "/dev/shm", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=1777"),
    ("tmpfs", "/run", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=0755"),
    ("tmpfs", "/tmp", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=1777"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2",
     syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, "nsdelegate"),
)


def leave_initramfs_root(mountpoint: str = "/.root") -> None:
    """Make the agent's root a bind mount of the initramfs instead of the initramfs itself.

    pivot_root refuses to move away from the initramfs root (EINVAL), which every container's
    setup needs. As switch_root does, "/" is bind-mounted onto a directory, that mount is moved
    over "/" and chrooted into: the root is then an ordinary mount with a parent, stacked on the
    namespace's root, so pivot_root works in the containers' mount namespaces and the kernel does
    not count the agent's children as chrooted (it refuses a user namespace to those).
    """
    os.makedirs(mountpoint, exist_ok=True)
    syscalls.mount("/", mountpoint, None, syscalls.MS_BIND | syscalls.MS_REC)
    os.chdir(mountpoint)
    syscalls.mount(mountpoint, "/", None, syscalls.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def mount_basics() -> None:
    for source, target, fstype, flags, data in _BASIC_MOUNTS:
        os.makedirs(target, exist_ok=True)
        try:
            syscalls.mount(source, target, fstype, flags, data)
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        link = f"/dev/{name}"
        if not os.path.lexists(link):
            os.symlink(target, link)


def load_modules(listing: Path = MODULE_LIST) -> list[str]:
    """Load the kernel modules named in `listing`, dependencies first; return those that failed."""
    failed: list[str] = []
    if not listing.exists():
        return failed
    for line in listing.read_text().splitlines():
        path = line.strip()
        if not path or path.startswith("#"):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            logger.warning("module %s: %s", path, err.strerror)
            failed.append(path)
            continue
        started = uptime()
        try:
            syscalls.finit_module(fd, path=path)
            logger.debug("module %s loaded in %.3f s", path, uptime() - started)
        except OSError as err:
            if err.errno != errno.EEXIST:
                logger.warning("module %s: %s", path, err.strerror)
                failed.append(path)
        finally:
            os.close(fd)
    return failed


def enable_controllers(root: Path = CGROUP_ROOT) -> None:
    """Delegate every available controller to child cgroups (one per container)."""
    try:
        available = (root / "cgroup.controllers").read_text().split()
    except OSError as err:
        logger.warning("cgroups unavailable: %s", err)
        return
    wanted = " ".join(f"+{c}" for c in CONTROLLERS if c in available)
    if wanted:
        try:
            (root / "cgroup.subtree_control").write_text(wanted)
        except OSError as err:
            logger.warning("enabling cgroup controllers %s: %s", wanted, err)


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def interface_up(name: str = "lo") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", name.encode(), 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14s", name.encode(),
                                                     flags | _IFF_UP, b""))


def uptime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot() -> None:
    """Prepare the guest; each step is logged with the guest uptime at which it ended."""
    leave_initramfs_root()
    mount_basics()
    logger.info("mounted basics at %.3f s", uptime())
    failed = load_modules()
    logger.info("modules loaded at %.3f s%s", uptime(),
                f" ({len(failed)} failed)" if failed else "")
    enable_controllers()
    try:
        interface_up("lo")
    except OSError as err:
        logger.warning("loopback: %s", err)
    os.environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
