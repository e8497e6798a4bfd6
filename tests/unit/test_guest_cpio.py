"""The newc writer: what it writes parses back, is byte-identical every time, and other cpio
implementations read it too."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cocoon.errors import AssetError
from cocoon.guest import cpio


def _tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc/odd").write_bytes(b"x" * 5)  # not a multiple of 4: padding
    (root / "etc/empty").write_bytes(b"")
    (root / "bin").symlink_to("usr/bin")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    return root


def _archive(entries: list[cpio.Entry]) -> bytes:
    out = io.BytesIO()
    n = cpio.write(out, entries)
    assert n == len(out.getvalue())
    return out.getvalue()


def test_round_trip_keeps_names_modes_and_content(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    blob = _archive([*cpio.entries_from_tree(root), cpio.chardev("dev/console", 5, 1)])
    parsed = {e.name: e for e in cpio.read(blob)}
    assert sorted(parsed) == ["bin", "dev/console", "etc", "etc/empty", "etc/odd", "tmp",
                              "usr", "usr/bin", "usr/bin/tool"]
    assert parsed["usr/bin/tool"].data == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(parsed["usr/bin/tool"].mode) == 0o755
    assert parsed["etc/odd"].data == b"xxxxx"
    assert stat.S_ISLNK(parsed["bin"].mode) and parsed["bin"].data == b"usr/bin"
    assert stat.S_IMODE(parsed["tmp"].mode) == 0o1777
    console = parsed["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert all(e.uid == 0 and e.gid == 0 for e in parsed.values())


def test_byte_identical_twice_whatever_the_input_order(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    entries = list(cpio.entries_from_tree(root))
    first = _archive(entries)
    os.utime(root / "etc/odd", (12345, 12345))  # host timestamps must not leak in
    second = _archive(list(reversed(list(cpio.entries_from_tree(root)))))
    assert first == second


def test_headers_have_zero_mtime_and_sequential_inodes() -> None:
    blob = _archive([cpio.regular("b", b"2"), cpio.directory("a")])
    assert blob[:6] == b"070701"
    inodes, mtimes, pos = [], [], 0
    while True:
        head = blob[pos:pos + 110]
        inodes.append(int(head[6:14], 16))
        mtimes.append(int(head[46:54], 16))
        namesize, size = int(head[94:102], 16), int(head[54:62], 16)
        name = blob[pos + 110:pos + 110 + namesize - 1]
        pos += 110 + namesize
        pos += -pos % 4
        pos += size + (-size % 4)
        if name == b"TRAILER!!!":
            break
    assert inodes == [1, 2, 0] and mtimes == [0, 0, 0]
    assert len(blob) % 4 == 0


def test_parents_sort_before_children() -> None:
    names = [e.name for e in cpio.read(_archive([
        cpio.regular("a/b/c", b""), cpio.directory("a-b"), cpio.directory("a"),
        cpio.directory("a/b")]))]
    assert names == ["a", "a-b", "a/b", "a/b/c"]


def test_duplicate_and_absolute_names_are_refused() -> None:
    with pytest.raises(AssetError, match="duplicate"):
        _archive([cpio.regular("x", b"1"), cpio.regular("x", b"2")])
    with pytest.raises(AssetError, match="bad initramfs entry name"):
        _archive([cpio.regular("/x", b"1")])


def test_reader_rejects_garbage() -> None:
    with pytest.raises(AssetError, match="not a newc cpio header"):
        cpio.read(b"garbage" * 20)


def test_fifo_in_tree_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(AssetError, match="not a file, dir or symlink"):
        list(cpio.entries_from_tree(tmp_path))


def _cpio_tool() -> list[str] | None:
    if shutil.which("cpio"):
        return ["cpio"]
    if shutil.which("busybox"):
        return ["busybox", "cpio"]
    return None


@pytest.mark.skipif(_cpio_tool() is None, reason="neither cpio nor busybox installed")
def test_an_independent_cpio_extracts_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    blob = _archive(list(cpio.entries_from_tree(root)))
    out = tmp_path / "out"
    out.mkdir()
    tool = _cpio_tool()
    assert tool is not None
    subprocess.run([*tool, "-i", "-d", "-m"], input=blob, cwd=out, check=True,
                   capture_output=True)
    assert (out / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.readlink(out / "bin") == "usr/bin"
    assert (out / "etc/odd").read_bytes() == b"xxxxx"
