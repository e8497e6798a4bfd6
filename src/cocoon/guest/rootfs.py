"""Shaping a directory of unpacked Debian packages into a small, usr-merged guest root.

Packages unpacked with `dpkg -x` keep Debian's split /lib and /usr/lib (the real system merges
them at install time), carry documentation, locales and tools the guest never runs, and
Python's extension modules link against libraries we choose not to ship. These helpers merge
the tree, prune it, install busybox's applets, and check that every binary left in it can find
its libraries, so a broken image fails at build time rather than as a kernel panic at boot.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from cocoon.errors import AssetError
from cocoon.guest import elf

logger = logging.getLogger("cocoon.guest.rootfs")

LIBDIR = "usr/lib/x86_64-linux-gnu"
PYLIB = "usr/lib/python3.11"
MERGED = ("bin", "sbin", "lib", "lib64")

# Never needed by the agent: documentation, tools, and the parts of the standard library that
# serve development, GUIs or other programs.
PRUNE: tuple[str, ...] = (
    "usr/share", "usr/libexec", "usr/lib/binfmt.d", "usr/lib/x86_64-linux-gnu/gconv",
    "etc/init.d", "etc/modprobe.d", "usr/lib/modprobe.d",
    "usr/lib/python3/dist-packages/pycriu", "usr/lib/python3/dist-packages/crit",
    "usr/lib/compel", "usr/lib/criu", "usr/include",
    "usr/lib/python3/dist-packages/crit-3.17.1-py3.11.egg-info",
    f"{LIBDIR}/libcriu.a", f"{LIBDIR}/libcompel.a", f"{LIBDIR}/pkgconfig",
    f"{LIBDIR}/libBrokenLocale.so.1", f"{LIBDIR}/libmemusage.so", f"{LIBDIR}/libpcprofile.so",
    f"{LIBDIR}/libc_malloc_debug.so.0", f"{LIBDIR}/libthread_db.so.1",
    f"{LIBDIR}/libnss_hesiod.so.2", f"{LIBDIR}/libmvec.so.1",
    *(f"{PYLIB}/{name}" for name in (
        "test", "tkinter", "idlelib", "turtledemo", "turtle.py", "lib2to3", "pydoc_data",
        "pydoc.py", "ensurepip", "venv", "distutils", "sqlite3", "dbm", "curses", "xmlrpc",
        "wsgiref", "unittest", "doctest.py", "__phello__", "ctypes/test", "tabnanny.py",
        "this.py", "antigravity.py", "config-3.11-x86_64-linux-gnu", "_pydecimal.py",
    )),
    # East Asian codecs: C tables of a megabyte the agent never decodes with
    *(f"{PYLIB}/encodings/{name}.py" for name in (
        "big5", "big5hkscs", "cp932", "cp949", "cp950", "euc_jis_2004", "euc_jisx0213",
        "euc_jp", "euc_kr", "gb18030", "gb2312", "gbk", "hz", "iso2022_jp", "iso2022_jp_1",
        "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_ext", "iso2022_kr",
        "johab", "shift_jis", "shift_jis_2004", "shift_jisx0213",
    )),
)
# Extension modules that exist only to test CPython itself, or serve the codecs pruned above.
PRUNE_EXTENSIONS = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "_xxsubinterpreters",
                    "audioop", "ossaudiodev", "_codecs_", "_multibytecodec")
# Executables that stay; everything else in bin/sbin is replaced by busybox applets.
KEEP_BINARIES = frozenset({"python3.11", "busybox", "criu", "tar"})


def merge_usr(tree: Path) -> None:
    """Move /bin, /sbin, /lib, /lib64 under /usr and leave symlinks, as Debian's usrmerge does."""
    for name in MERGED:
        top = tree / name
        if top.is_symlink():
            continue
        target = tree / "usr" / name
        if top.is_dir():
            _merge_into(top, target)
            shutil.rmtree(top)
        target.mkdir(parents=True, exist_ok=True)
        top.symlink_to(f"usr/{name}")


def _merge_into(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        to = dest / child.name
        if child.is_dir() and not child.is_symlink():
            _merge_into(child, to)
        elif to.exists() or to.is_symlink():
            if not _same(child, to):
                raise AssetError(f"usr-merge conflict: {child} and {to} differ",
                                 source=str(child), target=str(to))
        else:
            os.rename(child, to)


def _same(a: Path, b: Path) -> bool:
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    return a.read_bytes() == b.read_bytes()


def prune(tree: Path, paths: Iterable[str] = PRUNE) -> None:
    for rel in paths:
        path = tree / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for cache_dir in sorted(tree.rglob("__pycache__")):
        shutil.rmtree(cache_dir)
    dynload = tree / PYLIB / "lib-dynload"
    if dynload.is_dir():
        for ext in sorted(dynload.iterdir()):
            if ext.name.split(".", 1)[0].startswith(PRUNE_EXTENSIONS):
                ext.unlink()


def keep_only_binaries(tree: Path, keep: frozenset[str] = KEEP_BINARIES) -> None:
    """Remove every program in usr/bin and usr/sbin but `keep` (ldd, iconv, kmod, ...)."""
    for d in ("usr/bin", "usr/sbin"):
        for path in sorted((tree / d).glob("*")):
            if path.name not in keep:
                path.unlink()


def busybox_applets(busybox: Path) -> list[str]:
    """Install paths of every applet (`bin/sh`, `usr/sbin/chroot`, ...) the binary provides.

    busybox-static runs on any x86-64 Linux, so the host asks the binary itself.
    """
    cmd = [str(busybox), "--list-full"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise AssetError(f"cannot list busybox applets: {err}", command=cmd) from err
    return sorted(line.strip().lstrip("/") for line in out.splitlines() if line.strip())


def install_applets(tree: Path, applets: Iterable[str], busybox_path: str = "/bin/busybox",
                    usr_merged: bool = True) -> None:
    """A symlink to busybox for each applet, unless a real program already has that name."""
    for rel in applets:
        if usr_merged and rel.split("/", 1)[0] in ("bin", "sbin"):
            rel = f"usr/{rel}"
        link = tree / rel
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(busybox_path)


def drop_unloadable_extensions(tree: Path) -> list[str]:
    """Remove extension modules whose shared libraries are not in the image; returns them."""
    dynload = tree / PYLIB / "lib-dynload"
    dropped: list[str] = []
    for ext in sorted(dynload.glob("*.so")):
        if missing_libraries(tree, ext):
            ext.unlink()
            dropped.append(ext.name.split(".", 1)[0])
    logger.debug("dropped extension modules without their libraries: %s", dropped)
    return dropped


def missing_libraries(tree: Path, binary: Path) -> list[str]:
    libdir = tree / LIBDIR
    return [lib for lib in elf.needed(binary) if not (libdir / lib).exists()]


def check_libraries(tree: Path) -> None:
    """Every ELF file in the image must find its libraries in the image."""
    problems: dict[str, list[str]] = {}
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or not elf.is_elf(path):
                continue
            if missing := missing_libraries(tree, path):
                problems[str(path.relative_to(tree))] = missing
    if problems:
        raise AssetError(f"guest image binaries lack libraries: {problems}", missing=problems)
