"""The guest assets as the rest of Cocoon sees them: one place to ask for a kernel or an image.

Every `ensure_*` returns a cached asset in well under a second when it is current and builds it
otherwise (safe against concurrent callers); `find_guest_image` only looks. The cache directory
defaults to /var/lib/cocoon, or `$COCOON_ASSET_DIR`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cocoon.guest import busybox, floor, image, kernel
from cocoon.guest.cache import default_cache_dir, resolve_cache_dir
from cocoon.guest.compress import DEFAULT_COMPRESSION, Compression
from cocoon.guest.image import AGENT_INIT, GuestImage
from cocoon.guest.inputs import Sources
from cocoon.guest.kernel import Kernel
from cocoon.guest.oci_archive import write_busybox_oci_archive
from cocoon.guest.progress import Progress

__all__ = [
    "AGENT_INIT",
    "GuestImage",
    "Kernel",
    "Progress",
    "custom_kernel",
    "default_cache_dir",
    "ensure_busybox_rootfs",
    "ensure_floor_initrd",
    "ensure_guest_image",
    "ensure_kernel",
    "find_guest_image",
    "find_kernel",
    "write_busybox_oci_archive",
]


def ensure_kernel(cache_dir: Path | None = None, progress: Progress | None = None) -> Kernel:
    """Debian's current cloud kernel, unpacked into the cache (fetched on first use)."""
    return kernel.ensure_kernel(resolve_cache_dir(cache_dir), progress)


def custom_kernel(vmlinuz: Path, modules_dir: Path | None, identify: bool = True) -> Kernel:
    """The kernel `hypervisor.kernel` names, checked (see `kernel.custom_kernel`)."""
    return kernel.custom_kernel(vmlinuz, modules_dir, identify)


def find_kernel(cache_dir: Path | None = None) -> Kernel | None:
    """The cached current kernel, or None; never fetches."""
    return kernel.find_kernel(resolve_cache_dir(cache_dir))


def ensure_floor_initrd(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The busybox-only initrd that prints COCOON-FLOOR-OK and powers off."""
    return floor.ensure_floor_initrd(resolve_cache_dir(cache_dir), progress)


def ensure_guest_image(cache_dir: Path | None = None, progress: Progress | None = None, *,
                       init: bytes = AGENT_INIT, compression: Compression = DEFAULT_COMPRESSION,
                       extra_files: Mapping[str, bytes] | None = None,
                       sources: Sources | None = None,
                       kernel: Kernel | None = None) -> GuestImage:
    """The agent's guest image for the present inputs (built, with the kernel, if needed).

    `init`, `compression` and `extra_files` make variants (tests boot an image whose /init is
    a test script); each variant has its own digest and cache entry. `kernel`: for that kernel
    (`custom_kernel`) instead of Debian's.
    """
    return image.ensure_guest_image(resolve_cache_dir(cache_dir), progress, init=init,
                                    compression=compression, extra_files=extra_files,
                                    sources=sources, kernel=kernel)


def find_guest_image(cache_dir: Path | None = None, *, init: bytes = AGENT_INIT,
                     compression: Compression = DEFAULT_COMPRESSION,
                     extra_files: Mapping[str, bytes] | None = None,
                     sources: Sources | None = None,
                     kernel: Kernel | None = None) -> GuestImage | None:
    """The cached image if it is current for the present inputs, else None; never builds."""
    return image.find_guest_image(resolve_cache_dir(cache_dir), init=init,
                                  compression=compression, extra_files=extra_files,
                                  sources=sources, kernel=kernel)


def ensure_busybox_rootfs(cache_dir: Path | None = None,
                          progress: Progress | None = None) -> Path:
    """A busybox container root filesystem (read-only: copy it before a container writes)."""
    return busybox.ensure_busybox_rootfs(resolve_cache_dir(cache_dir), progress)
