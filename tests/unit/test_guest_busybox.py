"""The busybox container rootfs: applets, users and groups, mountpoints, fixed content."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cocoon.guest import busybox

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assert BUSYBOX is not None
    busybox._populate(tmp_path / "rootfs", Path(BUSYBOX))
    return tmp_path / "rootfs"


def _snapshot(root: Path) -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        what = os.readlink(path) if path.is_symlink() else (
            "dir" if path.is_dir() else str(hash(path.read_bytes())))
        out.append((path.relative_to(root).as_posix(), st.st_mode, what))
    return out


def test_layout(root: Path) -> None:
    assert os.access(root / "bin/busybox", os.X_OK)
    assert os.readlink(root / "bin/sh") == "busybox"
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        assert (root / d).is_dir(), d
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777


def test_users_and_groups(root: Path) -> None:
    passwd = (root / "etc/passwd").read_text().splitlines()
    group = (root / "etc/group").read_text().splitlines()
    assert "root:x:0:0:root:/root:/bin/sh" in passwd
    assert f"user:x:{busybox.USER_UID}:{busybox.USER_GID}:user:/home/user:/bin/sh" in passwd
    assert f"users:x:{busybox.EXTRA_GID}:user" in group  # the supplementary group
    if os.geteuid() == 0:
        st = (root / "home/user").stat()
        assert (st.st_uid, st.st_gid) == (busybox.USER_UID, busybox.USER_GID)


def test_same_content_every_time(root: Path, tmp_path: Path) -> None:
    assert BUSYBOX is not None
    busybox._populate(tmp_path / "again", Path(BUSYBOX))
    assert _snapshot(root) == _snapshot(tmp_path / "again")


def test_applets_run_through_their_links(root: Path) -> None:
    out = subprocess.run([str(root / "bin/echo"), "hello"], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "hello\n"
