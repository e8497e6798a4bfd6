"""A deterministic writer (and reader) for the cpio "newc" format the kernel unpacks as initramfs.

The external `cpio` tool stamps host mtimes, owners and inode numbers into the archive, so the
same tree would give different bytes on every build. Owning the writer lets the image digest
promise byte-identical output: entries sorted by path, mtime 0, uid/gid 0, inode numbers by
position. It also writes device nodes (/dev/console) without creating them on the host.
The reader exists so tests and `cocoon assets show` can look inside what was written.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cocoon.errors import AssetError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_HEADER_LEN = 110
_FIELDS = 13  # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
#              namesize check


@dataclass(frozen=True)
class Entry:
    """One archive member. `data` is file content, or the target for a symlink.

    `source` lets a regular file be read from disk only when it is written, so building an
    archive of a large tree does not hold every file in memory at once.
    """

    name: str
    mode: int
    data: bytes = b""
    source: Path | None = None
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0

    def content(self) -> bytes:
        return self.source.read_bytes() if self.source is not None else self.data


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data=data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, data=target.encode())


def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def entries_from_tree(root: Path) -> Iterator[Entry]:
    """Every file, directory and symlink under `root` (not `root` itself), in no particular order.

    Ownership is dropped (everything belongs to root in the guest) and so are timestamps; only
    the permission bits survive. Hard links become independent copies.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in (*dirnames, *filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                yield symlink(rel, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                yield directory(rel, perm)
            elif stat.S_ISREG(st.st_mode):
                yield Entry(rel, stat.S_IFREG | perm, source=path)
            else:
                raise AssetError(f"cannot put {path} in an initramfs: not a file, dir or symlink",
                                 path=str(path), mode=oct(st.st_mode))


def _header(ino: int, mode: int, uid: int, gid: int, nlink: int, size: int,
            rdev: tuple[int, int], namesize: int) -> bytes:
    fields = (ino, mode, uid, gid, nlink, 0, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write(out: BinaryIO, entries: Iterable[Entry]) -> int:
    """Write `entries` sorted by name (parents before children), then the trailer.

    Returns the number of bytes written. Duplicate names are an error: the kernel would let the
    later one win silently, which is never what a builder meant.
    """
    ordered = sorted(entries, key=lambda e: e.name)
    written = 0
    previous: str | None = None
    for ino, entry in enumerate(ordered, start=1):
        if entry.name == previous:
            raise AssetError(f"duplicate initramfs entry {entry.name!r}", name=entry.name)
        if not entry.name or entry.name.startswith("/") or entry.name == TRAILER:
            raise AssetError(f"bad initramfs entry name {entry.name!r}", name=entry.name)
        previous = entry.name
        data = entry.content() if not stat.S_ISDIR(entry.mode) else b""
        written += _write_one(out, ino, entry, data)
    written += _write_one(out, 0, Entry(TRAILER, 0), b"")
    return written


def _write_one(out: BinaryIO, ino: int, entry: Entry, data: bytes) -> int:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    head = _header(ino, entry.mode, entry.uid, entry.gid, nlink, len(data), entry.rdev,
                   len(name))
    chunk = head + name + _pad(_HEADER_LEN + len(name)) + data + _pad(len(data))
    out.write(chunk)
    return len(chunk)


def read(blob: bytes) -> list[Entry]:
    """Parse an uncompressed newc archive back into entries (without the trailer)."""
    entries: list[Entry] = []
    pos = 0
    while True:
        head = blob[pos:pos + _HEADER_LEN]
        if len(head) < _HEADER_LEN or head[:6] != MAGIC:
            raise AssetError(f"not a newc cpio header at offset {pos}", offset=pos,
                             seen=head[:6].decode("latin-1"))
        f = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(_FIELDS)]
        mode, uid, gid, size, namesize = f[1], f[2], f[3], f[6], f[11]
        pos += _HEADER_LEN
        name = blob[pos:pos + namesize - 1].decode()
        pos += namesize + (-(_HEADER_LEN + namesize) % 4)
        data = blob[pos:pos + size]
        pos += size + (-size % 4)
        if name == TRAILER:
            return entries
        entries.append(Entry(name, mode, data=data, rdev=(f[9], f[10]), uid=uid, gid=gid))
