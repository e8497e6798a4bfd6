"""What a sandbox runs from: its image resolved to a read-only root filesystem on the host.

The image is the built-in busybox root (`None` or `"busybox"`, built by Cocoon itself), a local
root filesystem directory, an OCI image layout directory, or an OCI archive (`podman save
--format oci-archive`). OCI images are unpacked once into the asset cache, keyed by their
manifest's digest (`cocoon.guest.oci_unpack`). Nothing here is written to: every sandbox gets
a writable overlay of its own on top (`cocoon.api.rootfs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cocoon.errors import ImageError
from cocoon.guest.assets import ensure_busybox_rootfs
from cocoon.guest.oci_unpack import ImageConfig, is_oci_image, unpack

BUSYBOX = "busybox"
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)

ImageSource = str | os.PathLike[str] | None


@dataclass(frozen=True)
class Image:
    """A resolved image: its root filesystem (read-only for us) and its process defaults."""

    name: str
    rootfs: Path
    config: ImageConfig


def busybox_binary() -> Path:
    """The static busybox of the built-in image: every sandbox gets it (read-only, outside its
    rootfs) to hold the container open and to move files, whatever its image holds."""
    binary = ensure_busybox_rootfs() / "bin" / "busybox"
    if not binary.is_file():
        raise ImageError(f"the built-in busybox image has no {binary}", path=str(binary))
    return binary


def resolve(source: ImageSource) -> Image:
    if source is None or source == BUSYBOX:
        return Image(BUSYBOX, ensure_busybox_rootfs(), ImageConfig(env=DEFAULT_ENV))
    path = Path(source).absolute()
    if not path.exists():
        raise ImageError(f"image {path} does not exist", path=str(path))
    if is_oci_image(path):
        unpacked = unpack(path)
        env = unpacked.config.env or DEFAULT_ENV
        return Image(f"{path}@{unpacked.digest}", unpacked.rootfs,
                     ImageConfig(env=env, cwd=unpacked.config.cwd,
                                 entrypoint=unpacked.config.entrypoint, cmd=unpacked.config.cmd))
    if not path.is_dir():
        raise ImageError(f"image {path} is neither a directory nor an OCI archive",
                         path=str(path))
    return Image(str(path), path, ImageConfig(env=DEFAULT_ENV))
