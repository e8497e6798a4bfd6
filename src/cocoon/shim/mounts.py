"""The container's root filesystem as containerd hands it over: mounts to make at <bundle>/rootfs.

A snapshotter gives one mount (overlay with lowerdir/upperdir/workdir options, or a bind of a
directory); the shim makes it before it exposes the rootfs to the guest and takes it down at
Delete, or `delete` does after a dead shim. Options are fstab style: the ones that are mount
flags become flags, the rest is the filesystem's data string (as containerd's mount package
splits them).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cocoon.errors import SandboxError
from cocoon.linux import syscalls as sc
from cocoon.sandbox.share import detach_all, mounts_under

logger = logging.getLogger("cocoon.shim.mounts")

# option -> (clear these flags?, flags)
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS),
    "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC),
    "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC),
    "nomand": (True, sc.MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS),
}


@dataclass(frozen=True)
class MountSpec:
    type: str
    source: str
    options: tuple[str, ...] = ()


def split_options(options: Sequence[str]) -> tuple[int, str]:
    """Mount flags and the data string for fstab-style options."""
    flags = 0
    data: list[str] = []
    for option in options:
        known = FLAG_OPTIONS.get(option)
        if known is None:
            data.append(option)
            continue
        clear, bits = known
        flags = flags & ~bits if clear else flags | bits
    return flags, ",".join(data)


def mount_rootfs(mounts: Sequence[MountSpec], target: Path) -> None:
    """Make containerd's rootfs mounts at `target` (in order, each on top of the last)."""
    target.mkdir(parents=True, exist_ok=True)
    done = 0
    try:
        for spec in mounts:
            flags, data = split_options(spec.options)
            fstype = None if flags & sc.MS_BIND else (spec.type or None)
            try:
                sc.mount(spec.source, str(target), fstype, flags & ~sc.MS_RDONLY
                         if flags & sc.MS_BIND else flags, data or None)
                done += 1
                if flags & sc.MS_BIND and flags & sc.MS_RDONLY:
                    sc.mount(None, str(target), None,
                             sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
            except OSError as err:
                raise SandboxError(f"cannot mount the rootfs ({spec.type} {spec.source}) on "
                                   f"{target}: {err.strerror}", target=str(target),
                                   type=spec.type, source=spec.source,
                                   options=list(spec.options)) from err
    except SandboxError:
        if done:
            unmount_rootfs(target)
        raise


def unmount_rootfs(target: Path) -> None:
    """Take down every mount at or under `target`; quiet when there is none."""
    detach_all(target)
    left = mounts_under(target)
    if left:
        logger.warning("mounts left under %s: %s", target, left)
    try:
        target.rmdir()
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            logger.warning("cannot remove %s: %s", target, err)
