"""Paths the host names in its requests, held to what the host gave the guest.

The host is the guest's caller, not its owner's proxy: a path in a request that climbs out of
what it belongs to (with `..`, or through a symlink met on the way) is refused, whether a
compromised or confused host sent it or a container planted the symlink. Kata's agent holds
CopyFile to its base directory in the same way.

- Files the host copies in (CopyFile) and the storages it mounts live in the agent's area,
  `AREA`; a copied file's directories are made and the file opened beneath it by the kernel
  (openat2, RESOLVE_BENEATH), so no symlink takes the write elsewhere.
- A container's root and bind sources are refused with a `..` component, and, when they lie
  in a storage the host had mounted, when they would leave that storage.
The guest's own paths (a bind of the guest's /proc, say) are the guest's to give.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from cocoon.linux.paths import make_in_root, open_in_root

AREA = "/run/cocoon"  # everything the host puts into the guest by name lives beneath this


class PathRefused(ValueError):
    """A host-named path outside what it may name; the message is one line."""


def clean(path: str, what: str) -> str:
    """`path` if it is absolute and has no `.`, `..` or empty components; else refused."""
    if not path.startswith("/") or "\0" in path:
        raise PathRefused(f"{what} {path!r} is not an absolute path")
    parts = path.rstrip("/").split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        raise PathRefused(f"{what} {path!r} is not a clean path (no '.', '..' or '//')")
    return "/" + "/".join(parts)


def beneath(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def in_area(path: str, what: str, area: str = AREA) -> str:
    """A clean path strictly beneath `area` (a storage's mount point, a copied file)."""
    path = clean(path, what)
    if path == area.rstrip("/") or not beneath(path, area):
        raise PathRefused(f"{what} {path!r} is outside {area}")
    return path


def stays_within(path: str, roots: Iterable[str], what: str) -> None:
    """Refuse `path` if it has a `..`, or if it lies beneath one of `roots` (the storages the
    host mounted) and its symlinks lead out of that root. A path that does not exist (yet)
    is left to whoever uses it to report."""
    if not path.startswith("/") or "\0" in path:
        raise PathRefused(f"{what} {path!r} is not an absolute path")
    if ".." in path.split("/"):
        raise PathRefused(f"{what} {path!r} climbs with '..'")
    path = os.path.normpath(path)
    for root in sorted(roots, key=len, reverse=True):
        if not beneath(path, root):
            continue
        try:
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.close(open_in_root(root_fd, path[len(root.rstrip("/")):], os.O_PATH,
                                  in_root=False))
        except OSError as err:
            if err.errno in (errno.EXDEV, errno.ELOOP):
                raise PathRefused(f"{what} {path!r} leads out of {root}") from None
        finally:
            os.close(root_fd)
        return


def copy_file(path: str, data: bytes, offset: int, *, file_mode: int, dir_mode: int,
              uid: int, gid: int, area: str = AREA) -> None:
    """CopyFile: write `data` at `offset` into `path` beneath `area`, making its directories
    (`dir_mode`); the file is created with `file_mode` and owned by `uid`:`gid`."""
    path = in_area(path, "CopyFile: path", area)
    os.makedirs(area, mode=0o755, exist_ok=True)
    relative = path[len(area.rstrip("/")) + 1:]
    directory, name = os.path.split(relative)
    area_fd = os.open(area, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            parent = make_in_root(area_fd, directory, dir_mode=dir_mode, in_root=False)
        except OSError as err:
            if err.errno in (errno.EXDEV, errno.ELOOP, errno.ENOTDIR):
                raise PathRefused(f"CopyFile: path {path!r} leads out of {area}") from None
            raise
    finally:
        os.close(area_fd)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC \
            | (0 if offset else os.O_TRUNC)
        try:
            fd = os.open(name, flags, file_mode, dir_fd=parent)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise PathRefused(f"CopyFile: path {path!r} is a symlink") from None
            raise
    finally:
        os.close(parent)
    try:
        os.pwrite(fd, data, offset)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
