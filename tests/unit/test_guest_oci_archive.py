"""The OCI image archive: a valid image layout whose digests check out, the same bytes twice."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from cocoon.guest import oci_archive


def _rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(b"\x7fELF fake")
    (root / "bin/busybox").chmod(0o755)
    (root / "bin/sh").symlink_to("busybox")
    (root / "home/user").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    return root


def _members(path: Path) -> dict[str, bytes | None]:
    with tarfile.open(path) as tar:
        out: dict[str, bytes | None] = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f else None
        return out


def _blob(members: dict[str, bytes | None], digest: str) -> bytes:
    algo, hexd = digest.split(":")
    data = members[f"blobs/{algo}/{hexd}"]
    assert data is not None
    assert hashlib.sha256(data).hexdigest() == hexd, "blob content does not match its name"
    return data


def test_layout_and_digests(tmp_path: Path) -> None:
    root = _rootfs(tmp_path / "rootfs")
    archive = oci_archive.write_busybox_oci_archive(tmp_path / "img.tar", "localhost/t:1",
                                                    rootfs=root)
    members = _members(archive)
    assert json.loads(members["oci-layout"] or b"") == {"imageLayoutVersion": "1.0.0"}
    index: dict[str, Any] = json.loads(members["index.json"] or b"")
    [entry] = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/t:1"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "localhost/t:1"
    manifest = json.loads(_blob(members, entry["digest"]))
    assert entry["size"] == len(_blob(members, entry["digest"]))
    config = json.loads(_blob(members, manifest["config"]["digest"]))
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"]["Cmd"] == ["sh"]
    [layer_desc] = manifest["layers"]
    assert layer_desc["mediaType"] == oci_archive.MT_LAYER
    layer = _blob(members, layer_desc["digest"])
    tar_bytes = gzip.decompress(layer)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        infos = {m.name: m for m in tar.getmembers()}
    assert list(infos) == sorted(infos)
    assert infos["bin/sh"].issym() and infos["bin/sh"].linkname == "busybox"
    assert infos["bin/busybox"].mode == 0o755 and infos["tmp"].mode == 0o1777
    assert (infos["home/user"].uid, infos["home/user"].gid) == (1000, 1000)
    assert all(m.mtime == 0 for m in infos.values())


def test_same_bytes_twice(tmp_path: Path) -> None:
    root = _rootfs(tmp_path / "rootfs")
    a = oci_archive.write_busybox_oci_archive(tmp_path / "a.tar", rootfs=root)
    (root / "bin/busybox").touch()  # a new mtime must not change the image
    b = oci_archive.write_busybox_oci_archive(tmp_path / "b.tar", rootfs=root)
    assert a.read_bytes() == b.read_bytes()
