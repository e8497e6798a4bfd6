"""Shaping unpacked packages into a guest root: usr-merge, pruning, applets, library checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cocoon.errors import AssetError
from cocoon.guest import elf, rootfs
from cocoon.guest.inputs import Sources


def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_merge_usr_moves_trees_and_leaves_symlinks(tmp_path: Path) -> None:
    _write(tmp_path / "lib/x86_64-linux-gnu/libc.so.6", b"libc")
    _write(tmp_path / "usr/lib/x86_64-linux-gnu/libffi.so.8", b"ffi")
    _write(tmp_path / "bin/busybox", b"bb")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld.so")
    rootfs.merge_usr(tmp_path)
    for name in rootfs.MERGED:
        assert os.readlink(tmp_path / name) == f"usr/{name}"
    assert (tmp_path / "usr/lib/x86_64-linux-gnu/libc.so.6").read_bytes() == b"libc"
    assert (tmp_path / "lib/x86_64-linux-gnu/libffi.so.8").read_bytes() == b"ffi"
    assert (tmp_path / "usr/bin/busybox").read_bytes() == b"bb"
    assert (tmp_path / "usr/sbin").is_dir()
    rootfs.merge_usr(tmp_path)  # idempotent


def test_merge_usr_refuses_conflicting_files(tmp_path: Path) -> None:
    _write(tmp_path / "bin/tool", b"one")
    _write(tmp_path / "usr/bin/tool", b"two")
    with pytest.raises(AssetError, match="usr-merge conflict"):
        rootfs.merge_usr(tmp_path)


def test_prune_removes_listed_paths_caches_and_test_extensions(tmp_path: Path) -> None:
    py = tmp_path / rootfs.PYLIB
    _write(py / "os.py")
    _write(py / "tkinter/__init__.py")
    _write(py / "__pycache__/os.cpython-311.pyc")
    _write(py / "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so")
    _write(py / "lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so")
    _write(py / "lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so")
    _write(tmp_path / "usr/share/doc/x/copyright")
    rootfs.prune(tmp_path)
    assert (py / "os.py").exists()
    assert (py / "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so").exists()
    for gone in ("tkinter", "__pycache__", "lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
                 "lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so"):
        assert not (py / gone).exists(), gone
    assert not (tmp_path / "usr/share").exists()


def test_binaries_are_replaced_by_applet_links(tmp_path: Path) -> None:
    _write(tmp_path / "usr/bin/python3.11")
    _write(tmp_path / "usr/bin/busybox")
    _write(tmp_path / "usr/bin/ldd")
    _write(tmp_path / "usr/sbin/ldconfig")
    rootfs.keep_only_binaries(tmp_path)
    rootfs.install_applets(tmp_path, ["bin/sh", "sbin/poweroff", "usr/bin/python3.11"])
    assert sorted(p.name for p in (tmp_path / "usr/bin").iterdir()) == [
        "busybox", "python3.11", "sh"]
    assert os.readlink(tmp_path / "usr/bin/sh") == "/bin/busybox"
    assert os.readlink(tmp_path / "usr/sbin/poweroff") == "/bin/busybox"
    assert not (tmp_path / "usr/bin/python3.11").is_symlink()


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_busybox_lists_its_applets() -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None
    applets = rootfs.busybox_applets(Path(busybox))
    assert "bin/sh" in applets and any(a.endswith("/poweroff") for a in applets)


def test_extensions_without_their_libraries_are_dropped(tmp_path: Path) -> None:
    upb = next((Sources.installed().google_dir / "_upb").glob("*.so"))
    dynload = tmp_path / rootfs.PYLIB / "lib-dynload"
    dynload.mkdir(parents=True)
    shutil.copy(upb, dynload / "_needs_cxx.cpython-311-x86_64-linux-gnu.so")
    libdir = tmp_path / rootfs.LIBDIR
    libdir.mkdir(parents=True)
    for lib in elf.needed(upb):
        if lib != "libstdc++.so.6":
            _write(libdir / lib)
    assert rootfs.drop_unloadable_extensions(tmp_path) == ["_needs_cxx"]
    assert list(dynload.iterdir()) == []


def test_check_libraries_names_what_is_missing(tmp_path: Path) -> None:
    shutil.copy("/bin/ls", _write(tmp_path / "usr/bin/ls").parent / "ls")
    with pytest.raises(AssetError, match="lack libraries") as info:
        rootfs.check_libraries(tmp_path)
    assert "libc.so.6" in info.value.evidence["missing"]["usr/bin/ls"]
    for lib in elf.needed(Path("/bin/ls")):
        _write(tmp_path / rootfs.LIBDIR / lib)
    rootfs.check_libraries(tmp_path)
