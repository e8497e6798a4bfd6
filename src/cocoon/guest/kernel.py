"""The guest kernel: Debian's current cloud kernel, unpacked into the asset cache.

The `linux-image-cloud-amd64` metapackage names the concrete kernel package of the day; that
package is fetched and unpacked into `<cache>/kernel/<release>/` (never the host's /boot), and
`depmod -b` indexes its modules so the image builder can resolve their dependencies. The
result is recorded in `kernel.json` beside the tree.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from cocoon.errors import AssetError
from cocoon.guest import apt, kmods
from cocoon.guest import cache as cachemod
from cocoon.guest.progress import Progress, Steps

logger = logging.getLogger("cocoon.guest.kernel")

METAPACKAGE = "linux-image-cloud-amd64"
_PREFIX = "linux-image-"
_KMOD_PACKAGES = ("kmod", "libkmod2")


@dataclass(frozen=True)
class Kernel:
    """An unpacked guest kernel and where it came from."""

    vmlinuz: Path
    release: str  # e.g. "6.1.0-56-cloud-amd64"
    package: str  # the linux-image-<release> package; CUSTOM for hypervisor.kernel
    package_version: str  # for a custom kernel: "sha256:" and its file's digest
    modules_dir: Path | None  # <tree>/lib/modules/<release>, indexed by depmod; None: none


CUSTOM = "custom"
_HEADER_MAGIC_AT, _VERSION_POINTER_AT = 0x202, 0x20E
_HEADER_READ = 1 << 16


def bzimage_release(vmlinuz: Path) -> str | None:
    """The release a bzImage says it is (its setup header's kernel_version string), or None
    for a file without one."""
    with open(vmlinuz, "rb") as f:
        head = f.read(_HEADER_READ)
    if len(head) < _VERSION_POINTER_AT + 2 or head[_HEADER_MAGIC_AT:_HEADER_MAGIC_AT + 4] \
            != b"HdrS":
        return None
    pointer = struct.unpack_from("<H", head, _VERSION_POINTER_AT)[0]
    if not pointer:
        return None
    text = head[pointer + 0x200:pointer + 0x200 + 256].split(b"\0", 1)[0]
    words = text.decode("ascii", "replace").split()
    return words[0] if words else None


def custom_kernel(vmlinuz: Path, modules_dir: Path | None, identify: bool = True) -> Kernel:
    """The kernel `hypervisor.kernel` names (with `hypervisor.kernel_modules`, its module tree,
    indexed by depmod; without it, the drivers the guest needs must be built in). Its identity
    for the guest image and templates is its file's digest (not computed, and left empty,
    without `identify`: a check only). AssetError names the setting."""
    if not vmlinuz.is_file():
        raise AssetError(f"hypervisor.kernel: {vmlinuz} is not a file", path=str(vmlinuz))
    try:
        release = bzimage_release(vmlinuz)
        digest = hashlib.sha256(vmlinuz.read_bytes()).hexdigest() if identify else ""
    except OSError as err:
        raise AssetError(f"hypervisor.kernel: cannot read {vmlinuz}: {err.strerror}",
                         path=str(vmlinuz)) from err
    if modules_dir is not None:
        if not (modules_dir / "modules.dep").is_file():
            raise AssetError(f"hypervisor.kernel_modules: {modules_dir} has no modules.dep "
                             "(a kernel's lib/modules/<release>, indexed by depmod)",
                             path=str(modules_dir))
        if release is not None and release != modules_dir.name:
            raise AssetError(f"hypervisor.kernel_modules: {modules_dir} holds modules of "
                             f"{modules_dir.name}, not of the kernel's release {release}",
                             path=str(modules_dir))
        release = release or modules_dir.name
    return Kernel(vmlinuz=vmlinuz, release=release or CUSTOM, package=CUSTOM,
                  package_version=f"sha256:{digest}" if digest else "", modules_dir=modules_dir)


def check_configured_kernel() -> Kernel | None:
    """The kernel `hypervisor.kernel` names, checked (AssetError naming the setting), or None
    when Debian's is used; `hypervisor.image`, when set, must be a file too."""
    from cocoon.config import current as settings

    hypervisor = settings().hypervisor
    if hypervisor.image is not None and not hypervisor.image.is_file():
        raise AssetError(f"hypervisor.image: {hypervisor.image} is not a file",
                         path=str(hypervisor.image))
    if hypervisor.kernel is None:
        return None
    return custom_kernel(hypervisor.kernel, hypervisor.kernel_modules, identify=False)


def _kernel_from_dir(tree: Path) -> Kernel | None:
    meta = cachemod.read_json(tree / "kernel.json")
    if not isinstance(meta, dict):
        return None
    release = meta.get("release", "")
    modules_dir = tree / "lib" / "modules" / release
    kernel = Kernel(vmlinuz=tree / "boot" / f"vmlinuz-{release}", release=release,
                    package=meta.get("package", ""),
                    package_version=meta.get("package_version", ""),
                    modules_dir=modules_dir)
    if not kernel.vmlinuz.is_file() or not (modules_dir / "modules.dep").is_file():
        return None
    return kernel


def _current(metapackage: apt.Package) -> tuple[str, str, str]:
    name, version = apt.pinned_dependency(metapackage, _PREFIX)
    return name, version, name[len(_PREFIX):]


def find_kernel(cache_dir: Path) -> Kernel | None:
    """The cached kernel apt currently points at, if it is unpacked; never fetches or runs apt."""
    meta = apt.lookup(cache_dir, "kernel-meta", [METAPACKAGE])
    if meta is None:
        return None
    _name, version, release = _current(meta[METAPACKAGE])
    kernel = _kernel_from_dir(cache_dir / "kernel" / release)
    if kernel is None or kernel.package_version != version:
        return None
    return kernel


def ensure_kernel(cache: Path, progress: Progress | None = None) -> Kernel:
    """The current cloud kernel, fetched and unpacked on first use."""
    steps = Steps(progress, "kernel", 4)
    steps("resolve")
    meta = apt.resolve(cache, "kernel-meta", [METAPACKAGE])
    name, version, release = _current(meta[METAPACKAGE])
    dest = cache / "kernel" / release
    kernel = _kernel_from_dir(dest)
    if kernel is not None and kernel.package_version == version:
        steps.cached()
        return kernel
    with cachemod.locked(cache, "kernel"):
        kernel = _kernel_from_dir(dest)
        if kernel is not None and kernel.package_version == version:
            steps.cached()
            return kernel
        pkg = apt.resolve(cache, "kernel", [name])[name]
        if pkg.version != version:
            raise AssetError(f"{METAPACKAGE} wants {name} {version} but apt offers {pkg.version}",
                             package=name, wanted=version, candidate=pkg.version)
        steps("download")
        deb = apt.fetch(cache, [pkg])[name]
        depmod = _depmod(cache)
        steps("unpack")
        with cachemod.building(dest) as tmp:
            apt.unpack(deb, tmp)
            shutil.rmtree(tmp / "usr" / "share", ignore_errors=True)
            steps("depmod")
            kmods.run_depmod(tmp, release, depmod)
            cachemod.write_json_atomic(tmp / "kernel.json", {
                "release": release, "package": name, "package_version": version,
                "deb_sha256": pkg.sha256,
            })
        apt.remove_cached(cache, pkg)
    kernel = _kernel_from_dir(dest)
    if kernel is None:
        raise AssetError(f"unpacked {name} into {dest} but found no vmlinuz-{release}",
                         path=str(dest))
    logger.info("kernel %s (%s %s) ready in %s", release, name, version, dest)
    return kernel


def _depmod(cache: Path) -> str:
    """The host's depmod, or one from Debian's kmod package unpacked into the cache."""
    host = apt.which_or_none("depmod")
    if host:
        return host
    packages = apt.resolve(cache, "kmod", list(_KMOD_PACKAGES))
    tools = cache / "tools" / f"kmod-{packages['kmod'].version.replace(':', '_')}"
    wrapper = tools / "depmod"
    if wrapper.is_file():
        return str(wrapper)
    debs = apt.fetch(cache, packages.values())
    with cachemod.building(tools) as tmp:
        for deb in debs.values():
            apt.unpack(deb, tmp)
        # kmod picks the tool by argv[0]; its library comes from the unpacked tree.
        libdir = "usr/lib/x86_64-linux-gnu"
        (tmp / "depmod").write_text(
            "#!/bin/bash\n"
            f'd="$(dirname "$0")"\n'
            f'LD_LIBRARY_PATH="$d/{libdir}" exec -a depmod "$d/bin/kmod" "$@"\n')
        (tmp / "depmod").chmod(0o755)
    return str(wrapper)
