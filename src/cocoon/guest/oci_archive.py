"""The busybox rootfs as an OCI image archive that `podman load` and `ctr image import` accept.

The integration tests need an image in the engines' stores without a registry. An oci-archive
is a tar of an OCI image layout (oci-layout, index.json, blobs/sha256/...): here one gzip
layer, its config (linux/amd64, Cmd ["sh"]) and a manifest. Every byte is fixed (sorted tar
members, zero timestamps, canonical JSON), so the image id is the same on every host.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cocoon.guest import cache as cachemod
from cocoon.guest.busybox import OWNERS, ensure_busybox_rootfs
from cocoon.guest.progress import Progress

DEFAULT_REF = "localhost/cocoon-busybox:latest"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = "1970-01-01T00:00:00Z"


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(root: Path, owners: Mapping[str, tuple[int, int]] = OWNERS) -> bytes:
    """A deterministic tar of `root`: sorted, mtime 0, owned by root except `owners`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = 0
            info.uid, info.gid = owners.get(rel, (0, 0))
            info.uname = info.gname = ""
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


def build_blobs(root: Path, ref: str) -> tuple[dict[str, bytes], bytes]:
    """The blobs by digest, and index.json, of a one-layer image of `root` named `ref`."""
    tar = layer_tar(root)
    layer = gzip.compress(tar, compresslevel=6, mtime=0)
    config = _canonical({
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": {"Cmd": ["sh"], "Env": [ENV_PATH], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_sha(tar)]},
        "history": [{"created": EPOCH, "created_by": "cocoon busybox rootfs"}],
    })
    manifest = _canonical({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": _sha(layer), "size": len(layer)}],
    })
    index = _canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": _sha(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": ref,
                "org.opencontainers.image.ref.name": ref,
            },
        }],
    })
    blobs = {_sha(blob): blob for blob in (layer, config, manifest)}
    return blobs, index


def write_busybox_oci_archive(dest: Path, ref: str = DEFAULT_REF, *,
                              cache_dir: Path | None = None,
                              progress: Progress | None = None,
                              rootfs: Path | None = None) -> Path:
    """Write the oci-archive of the busybox rootfs (built if needed) to `dest`."""
    if rootfs is None:
        rootfs = ensure_busybox_rootfs(cachemod.resolve_cache_dir(cache_dir), progress)
    blobs, index = build_blobs(rootfs, ref)
    members: list[tuple[str, bytes | None]] = [
        ("blobs", None), ("blobs/sha256", None),
        ("index.json", index),
        ("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
        *((f"blobs/sha256/{digest.split(':', 1)[1]}", blob)
          for digest, blob in sorted(blobs.items())),
    ]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uname = info.gname = ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest)
    return dest
