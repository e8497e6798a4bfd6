"""Unpacking OCI images: layers in order, whiteouts and opaque directories honoured, digests
checked, the cache reused, and hostile entries kept inside the image (runs as root: owners
are set as the image says)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cocoon.errors import ImageError
from cocoon.guest import oci_unpack
from tests.framework.ociimage import Entry, write_archive, write_layout

BASE = [Entry("etc", "dir", mode=0o755), Entry("etc/keep", data=b"keep"),
        Entry("etc/gone", data=b"gone"), Entry("opaque", "dir", mode=0o755),
        Entry("opaque/old", data=b"old"), Entry("bin", "dir", mode=0o755),
        Entry("bin/tool", data=b"\x7fELF", mode=0o755, uid=1000, gid=1000),
        Entry("bin/alias", "link", target="bin/tool")]
TOP = [Entry("etc/.wh.gone"), Entry("opaque/new", data=b"new"),
       Entry("opaque/.wh..wh..opq"), Entry("etc/keep", data=b"changed")]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking sets owners: needs root")


def test_layers_apply_in_order_with_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    image = write_layout(tmp_path / "layout", [BASE, TOP], env=["A=1"])
    unpacked = oci_unpack.unpack(image, tmp_path / "cache")
    root = unpacked.rootfs
    assert (root / "etc/keep").read_bytes() == b"changed"
    assert not (root / "etc/gone").exists()
    # the opaque marker came after "new" in the same layer: only the lower "old" goes
    assert sorted(os.listdir(root / "opaque")) == ["new"]
    tool = (root / "bin/tool").stat()
    assert (tool.st_uid, tool.st_gid, tool.st_mode & 0o777) == (1000, 1000, 0o755)
    assert (root / "bin/alias").stat().st_ino == tool.st_ino  # a hard link
    assert unpacked.config.env == ("A=1",)
    assert unpacked.digest.startswith("sha256:")


def test_an_archive_is_unpacked_once_and_then_taken_from_the_cache(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "image.tar", [BASE], gzipped=False)
    first = oci_unpack.unpack(archive, tmp_path / "cache")
    (first.rootfs / "marker").write_text("cached")
    again = oci_unpack.unpack(archive, tmp_path / "cache")
    assert again.rootfs == first.rootfs and (again.rootfs / "marker").exists()
    assert (again.rootfs / "etc/keep").read_bytes() == b"keep"


def test_a_symlink_cannot_carry_later_entries_out_of_the_image(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    parts = outside.parts[1:]
    same_dirs = [Entry("/".join(parts[:i + 1]), "dir", mode=0o755) for i in range(len(parts))]
    evil = [*same_dirs, Entry("escape", "symlink", target=str(outside)),
            Entry("escape/planted", data=b"x"),
            Entry("up", "symlink", target="../../../../.." + str(outside)),
            Entry("up/planted2", data=b"y")]
    unpacked = oci_unpack.unpack(write_layout(tmp_path / "l", [evil]), tmp_path / "cache")
    assert list(outside.iterdir()) == []
    # the kernel resolved the links inside the image: that is where the files went
    inside = Path(str(unpacked.rootfs) + str(outside))
    assert (inside / "planted").read_bytes() == b"x"
    assert (inside / "planted2").read_bytes() == b"y"
    dangling = [Entry("gone", "symlink", target="/nowhere"), Entry("gone/file", data=b"z")]
    with pytest.raises(ImageError, match="cannot unpack 'gone/file'"):
        oci_unpack.unpack(write_layout(tmp_path / "d", [dangling]), tmp_path / "cache")


def test_dotdot_names_and_bad_digests_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="leaves the image"):
        oci_unpack.unpack(write_layout(tmp_path / "a", [[Entry("../evil", data=b"x")]]),
                          tmp_path / "cache")
    image = write_layout(tmp_path / "b", [BASE])
    blob = next(p for p in (image / "blobs/sha256").iterdir() if p.stat().st_size > 300)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    with pytest.raises(ImageError, match=r"does not match its digest|not a readable tar"):
        oci_unpack.unpack(image, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "oci").iterdir())  # nothing half made is kept
    with pytest.raises(ImageError, match="does not exist"):
        oci_unpack.unpack(tmp_path / "missing", tmp_path / "cache")
    (tmp_path / "junk").write_bytes(b"not a tar at all")
    with pytest.raises(ImageError, match="not an OCI archive"):
        oci_unpack.unpack(tmp_path / "junk", tmp_path / "cache")
