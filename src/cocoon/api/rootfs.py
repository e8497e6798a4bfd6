"""A sandbox's writable root: an overlay of its image on the host, inside the sandbox's own
directory.

The image stays read-only below (`lowerdir`); what the sandbox writes lands in `upper/`, next to
the overlay's mount point, so it goes with the sandbox directory when the sandbox stops (the
launcher unmounts everything beneath that directory and removes it, even after a crash).
"""

from __future__ import annotations

from pathlib import Path

from cocoon.errors import ImageError, SandboxError
from cocoon.linux import syscalls as sc

DIR = "api"


def mount_overlay(lower: Path, vm_dir: Path) -> Path:
    """Mount the overlay of `lower` under `vm_dir`; its mount point."""
    if any(c in str(lower) for c in ",:\\"):
        raise ImageError(f"image {lower}: a path with ',', ':' or '\\' cannot be an "
                         "overlay's lower directory", path=str(lower))
    base = vm_dir / DIR
    upper, work, merged = base / "upper", base / "work", base / "rootfs"
    for directory in (base, upper, work, merged):
        directory.mkdir(mode=0o755, exist_ok=True)
    try:
        sc.mount("overlay", str(merged), "overlay", 0,
                 f"lowerdir={lower},upperdir={upper},workdir={work}")
    except OSError as err:
        raise SandboxError(f"cannot mount the root of the sandbox in {base}: "
                           f"{err.strerror or err}", path=str(base)) from err
    return merged
