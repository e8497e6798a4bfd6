"""What the asset cache holds, and whether it is current: the facts behind `cocoon assets show`.

Telling "current" apart from "cached" needs the versions apt would fetch now, so this may run
apt-cache once (its answer is stored for the present apt state) but it never downloads or
builds anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cocoon.errors import AssetError
from cocoon.guest import apt, image, kernel
from cocoon.guest import cache as cachemod


def describe(cache: Path) -> dict[str, Any]:
    """A JSON-able description of the cache at `cache`."""
    current_kernel: str | None = None
    current_image: str | None = None
    problems: list[str] = []
    try:
        meta = apt.resolve(cache, "kernel-meta", [kernel.METAPACKAGE])[kernel.METAPACKAGE]
        current_kernel = apt.pinned_dependency(meta, "linux-image-")[0][len("linux-image-"):]
        apt.resolve(cache, image.PACKAGE_LABEL, image.GUEST_PACKAGES)
        found = image.find_guest_image(cache)
        current_image = found.digest if found else None
    except AssetError as err:
        problems.append(str(err))
    return {
        "cache_dir": str(cache),
        "kernels": _kernels(cache, current_kernel),
        "current_kernel_release": current_kernel,
        "images": _images(cache, current_image),
        "current_image": current_image,
        "floor_initrds": _files(cache / "floor", "initrd.img"),
        "busybox_rootfs": [str(p.parent / "rootfs")
                           for p in sorted((cache / "busybox").glob("*/complete"))],
        "problems": problems,
    }


def _kernels(cache: Path, current: str | None) -> list[dict[str, Any]]:
    result = []
    for meta_file in sorted((cache / "kernel").glob("*/kernel.json")):
        meta = cachemod.read_json(meta_file)
        if not isinstance(meta, dict):
            continue
        vmlinuz = meta_file.parent / "boot" / f"vmlinuz-{meta.get('release')}"
        result.append({
            "release": meta.get("release"),
            "package": meta.get("package"),
            "package_version": meta.get("package_version"),
            "vmlinuz": str(vmlinuz),
            "vmlinuz_bytes": vmlinuz.stat().st_size if vmlinuz.exists() else None,
            "current": meta.get("release") == current,
        })
    return result


def _images(cache: Path, current: str | None) -> list[dict[str, Any]]:
    agent_init_hash = hashlib.sha256(image.AGENT_INIT).hexdigest()
    result = []
    for manifest_file in sorted((cache / "images").glob("*/manifest.json")):
        manifest = cachemod.read_json(manifest_file)
        if not isinstance(manifest, dict):
            continue
        inputs = manifest.get("inputs", {})
        result.append({
            "digest": manifest.get("digest"),
            "initrd": str(manifest_file.parent / "initrd.img"),
            "kernel_release": manifest.get("kernel", {}).get("release"),
            "compression": manifest.get("compression"),
            "sizes": manifest.get("sizes"),
            "built_at": manifest.get("built_at"),
            "build_seconds": manifest.get("build_seconds"),
            "variant": "agent" if inputs.get("init") == agent_init_hash
                       and not inputs.get("extra_files") else "custom init",
            "current": manifest.get("digest") == current,
        })
    return result


def _files(base: Path, name: str) -> list[dict[str, Any]]:
    return [{"path": str(p), "bytes": p.stat().st_size} for p in sorted(base.glob(f"*/{name}"))]


def render(info: dict[str, Any]) -> str:
    """The human-readable form of `describe()`."""
    lines = [f"asset cache: {info['cache_dir']}"]
    kernels = info["kernels"] or []
    if not kernels:
        lines.append("kernel: none cached")
    for k in kernels:
        mark = "current" if k["current"] else "old"
        lines.append(f"kernel: {k['release']} ({k['package']} {k['package_version']}), "
                     f"vmlinuz {_mb(k['vmlinuz_bytes'])} [{mark}]")
    images = info["images"] or []
    if not images:
        lines.append("guest image: none cached")
    for img in images:
        sizes = img.get("sizes") or {}
        mark = "current" if img["current"] else ("stale" if img["variant"] == "agent"
                                                 else "test variant")
        lines.append(f"guest image: {str(img['digest'])[:16]} kernel {img['kernel_release']}, "
                     f"{img['compression']} {_mb(sizes.get('initrd'))} "
                     f"({_mb(sizes.get('uncompressed'))} unpacked, {sizes.get('files')} files), "
                     f"built {img['built_at']} in {img['build_seconds']}s [{mark}]")
    if images and not info["current_image"]:
        lines.append("guest image: none is current for the present inputs "
                     "(run: cocoon assets build)")
    for f in info["floor_initrds"]:
        lines.append(f"floor initrd: {f['path']} ({_mb(f['bytes'])})")
    for path in info["busybox_rootfs"]:
        lines.append(f"busybox rootfs: {path}")
    lines.extend(f"problem: {p}" for p in info["problems"])
    return "\n".join(lines)


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"

