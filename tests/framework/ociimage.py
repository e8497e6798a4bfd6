"""OCI images made by hand for tests: layers listed entry by entry, written as an image layout
directory or as an OCI archive (what `podman save --format oci-archive` writes), so the
unpacker can be given whiteouts, opaque directories, hard links and hostile entries."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str = "file"  # file, dir, symlink, link
    data: bytes = b""
    target: str = ""  # a symlink's or hard link's
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def layer_tar(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 1
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            elif entry.kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, entry.target
            else:
                info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buffer.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes, media: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}


def image_blobs(layers: Sequence[Sequence[Entry]], *, env: Sequence[str] = (),
                gzipped: bool = True) -> tuple[dict[str, bytes], bytes]:
    blobs: dict[str, bytes] = {}
    descriptors = []
    for entries in layers:
        raw = layer_tar(entries)
        data = gzip.compress(raw, mtime=0) if gzipped else raw
        descriptors.append(_blob(blobs, data, LAYER + ("+gzip" if gzipped else "")))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": list(env), "WorkingDir": "/"},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _blob(blobs, config, "application/vnd.oci.image.config.v1+json"),
        "layers": descriptors}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        _blob(blobs, manifest, "application/vnd.oci.image.manifest.v1+json")]}).encode()
    return blobs, index


def write_layout(dest: Path, layers: Sequence[Sequence[Entry]], **kwargs: Any) -> Path:
    blobs, index = image_blobs(layers, **kwargs)
    (dest / "blobs" / "sha256").mkdir(parents=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_bytes(index)
    for digest, data in blobs.items():
        (dest / "blobs" / "sha256" / digest.partition(":")[2]).write_bytes(data)
    return dest


def write_archive(dest: Path, layers: Sequence[Sequence[Entry]], **kwargs: Any) -> Path:
    blobs, index = image_blobs(layers, **kwargs)
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index,
             **{f"blobs/sha256/{d.partition(':')[2]}": b for d, b in blobs.items()}}
    with tarfile.open(dest, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest
