"""The sandbox's share: the one host directory virtiofsd exports to the guest.

Container rootfs and bind-mount sources are bind-mounted beneath it, per container, so the guest
can reach nothing else of the host. The share is itself a shared mount point: binds added after
virtiofsd started (a second container of a pod) propagate into virtiofsd's private mount
namespace, which is a slave of the host's. Read-only volumes are made read-only here, on the host,
as well as in the guest: the guest is not trusted to honour the flag.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from pathlib import Path

from cocoon.errors import ConfigError, SandboxError
from cocoon.linux import syscalls as sc

logger = logging.getLogger("cocoon.sandbox.share")

GUEST_MOUNTPOINT = "/run/cocoon/shared"
VIRTIOFS_TAG = "cocoon"
MODULES_DIR = ".modules"  # in the share: the guest kernel's module tree


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path).rstrip("/")
    found: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def detach_all(path: Path) -> None:
    for target in mounts_under(path):
        try:
            sc.umount2(target, sc.MNT_DETACH)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOENT):
                logger.warning("cannot unmount %s: %s", target, err)


def remove_vm_dir(path: Path) -> None:
    """Unmount whatever is left under a sandbox directory and remove it."""
    if not path.exists():
        return
    detach_all(path)
    shutil.rmtree(path, ignore_errors=True)


class Share:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if str(self.root) not in mounts_under(self.root):
            sc.mount(str(self.root), str(self.root), None, sc.MS_BIND)
        sc.mount(None, str(self.root), None, sc.MS_SHARED)

    def guest_path(self, host_path: Path) -> str:
        return f"{GUEST_MOUNTPOINT}/{host_path.relative_to(self.root)}"

    def _bind(self, source: Path, target: Path, readonly: bool, recursive: bool) -> None:
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        flags = sc.MS_BIND | (sc.MS_REC if recursive else 0)
        sc.mount(str(source), str(target), None, flags)
        if readonly:
            sc.mount(None, str(target), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)

    def expose_rootfs(self, container_id: str, rootfs: Path, readonly: bool = False) -> str:
        """Bind the container's rootfs into the share; return its path in the guest."""
        if not rootfs.is_dir():
            raise ConfigError(f"root.path: rootfs {rootfs} does not exist or is not a directory",
                              path=str(rootfs))
        target = self.root / container_id / "rootfs"
        self._bind(rootfs, target, readonly, recursive=True)
        return self.guest_path(target)

    def expose_mount(self, container_id: str, index: int, source: Path,
                     readonly: bool) -> str:
        """Bind one volume's source into the share; return its path in the guest."""
        if not source.exists():
            raise ConfigError(f"mounts[{index}].source: {source} does not exist",
                              path=str(source))
        target = self.root / container_id / "mounts" / str(index)
        self._bind(source, target, readonly, recursive=True)
        return self.guest_path(target)

    def expose_modules(self, modules_dir: Path) -> str:
        """Bind the guest kernel's module tree (the asset cache's, depmod'ed) read-only into
        the share; return its path in the guest."""
        target = self.root / MODULES_DIR
        self._bind(modules_dir, target, readonly=True, recursive=False)
        return self.guest_path(target)

    def remove_container(self, container_id: str) -> None:
        path = self.root / container_id
        detach_all(path)
        shutil.rmtree(path, ignore_errors=True)

    def destroy(self) -> None:
        detach_all(self.root)
        with contextlib.suppress(FileNotFoundError):
            if any(mounts_under(self.root)):
                raise SandboxError(f"share {self.root} still has mounts", path=str(self.root))
            shutil.rmtree(self.root)


def sandbox_dir_mounts(path: Path) -> list[str]:
    """For leak checks: every mount still under a sandbox directory."""
    return mounts_under(path) if os.path.exists("/proc/self/mountinfo") else []
