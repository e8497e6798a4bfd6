"""Resolving a path inside a root directory without letting symlinks climb out of it.

`secure_join` computes a path (as runc's securejoin does); it is only as safe as the tree is
still while the path is used. `open_in_root` and `make_in_root` leave the walk to the kernel
(openat2), so a symlink swapped in meanwhile cannot take them out of the root either:
`in_root=True` reads symlinks and `..` as if the root were `/` (a container's rootfs), and
`in_root=False` refuses a path that climbs out with EXDEV (an area a caller was given).
"""

from __future__ import annotations

import errno
import os
import stat

from cocoon.linux import syscalls as sc


def secure_join(root: str, unsafe: str, max_links: int = 255) -> str:
    """Resolve `unsafe` as if `root` were `/`: symlinks may not climb out of `root`."""
    parts = [p for p in unsafe.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, "too many symlinks", unsafe)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _resolve(in_root: bool, no_symlinks: bool) -> int:
    return (sc.RESOLVE_NO_MAGICLINKS | (sc.RESOLVE_IN_ROOT if in_root else sc.RESOLVE_BENEATH)
            | (sc.RESOLVE_NO_SYMLINKS if no_symlinks else 0))


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, *, in_root: bool = True,
                 no_symlinks: bool = False, mode: int = 0) -> int:
    """Open `path` beneath the directory `root_fd` (see the module docstring); with
    `no_symlinks` a symlink anywhere on the way fails with ELOOP."""
    relative = path.lstrip("/") or "."
    return sc.openat2(root_fd, relative, flags, _resolve(in_root, no_symlinks), mode)


def make_in_root(root_fd: int, path: str, *, as_file: bool = False, dir_mode: int = 0o755,
                 file_mode: int = 0o644, owner: tuple[int, int] | None = None,
                 in_root: bool = True, no_symlinks: bool = False) -> int:
    """Make `path` and its missing parents beneath `root_fd`, each step resolved by the
    kernel inside the root, and return an O_PATH descriptor of it. What this call makes is
    chowned to `owner`, never followed: a symlink met is resolved inside the root, and one at
    the last component is what exists there already."""
    parts = [p for p in os.path.normpath("/" + path).split("/") if p]
    fd = os.dup(root_fd)
    try:
        for index, name in enumerate(parts):
            last = index == len(parts) - 1
            try:
                child = open_in_root(root_fd, "/".join(parts[:index + 1]),
                                     os.O_PATH | (0 if last and as_file else os.O_DIRECTORY),
                                     in_root=in_root, no_symlinks=no_symlinks)
            except FileNotFoundError:
                created = True
                try:
                    if last and as_file:
                        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                         | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode,
                                         dir_fd=fd))
                    else:
                        os.mkdir(name, dir_mode, dir_fd=fd)
                except FileExistsError:
                    created = False  # made meanwhile, or a dangling symlink: not ours
                if created and owner is not None:
                    os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
                child = open_in_root(root_fd, "/".join(parts[:index + 1]),
                                     os.O_PATH | (0 if last and as_file else os.O_DIRECTORY),
                                     in_root=in_root, no_symlinks=no_symlinks)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise
