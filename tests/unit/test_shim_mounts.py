"""containerd's rootfs mounts made at <bundle>/rootfs and taken down again (real mounts, root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cocoon.errors import SandboxError
from cocoon.linux import syscalls as sc
from cocoon.sandbox.share import mounts_under
from cocoon.shim.mounts import MountSpec, mount_rootfs, split_options, unmount_rootfs

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_fstab_options_split_into_flags_and_data() -> None:
    flags, data = split_options(["ro", "nosuid", "index=off", "lowerdir=/a:/b", "upperdir=/u"])
    assert flags == sc.MS_RDONLY | sc.MS_NOSUID
    assert data == "index=off,lowerdir=/a:/b,upperdir=/u"
    assert split_options(["rbind", "rw"]) == (sc.MS_BIND | sc.MS_REC, "")
    assert split_options(["ro", "rw"])[0] == 0  # the later option wins, as in fstab


@needs_root
def test_overlay_rootfs_is_mounted_and_unmounted(tmp_path: Path) -> None:
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "hello").write_text("from the image\n")
    target = tmp_path / "bundle" / "rootfs"
    mount_rootfs([MountSpec("overlay", "overlay", (f"workdir={work}", f"upperdir={upper}",
                                                   f"lowerdir={lower}"))], target)
    try:
        assert (target / "hello").read_text() == "from the image\n"
        (target / "new").write_text("x")
        assert (upper / "new").exists()
    finally:
        unmount_rootfs(target)
    assert not mounts_under(tmp_path)
    assert not target.exists()


@needs_root
def test_readonly_bind_is_readonly(tmp_path: Path) -> None:
    source = tmp_path / "snap"
    source.mkdir()
    target = tmp_path / "rootfs"
    mount_rootfs([MountSpec("bind", str(source), ("rbind", "ro"))], target)
    try:
        with pytest.raises(OSError):
            (target / "f").write_text("x")
    finally:
        unmount_rootfs(target)
    assert not mounts_under(tmp_path)


@needs_root
def test_a_failed_mount_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "rootfs"
    with pytest.raises(SandboxError, match="cannot mount the rootfs"):
        mount_rootfs([MountSpec("overlay", "overlay", (f"lowerdir={tmp_path}/missing",))],
                     target)
    assert not mounts_under(tmp_path)
    unmount_rootfs(target)  # quiet when nothing is mounted
