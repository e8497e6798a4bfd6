"""The guest image: an initramfs with Debian's Python, busybox, the kernel modules and the agent.

The image is named by the digest of its inputs (cocoon.guest.inputs) and lives in
`<cache>/images/<digest16>/` as `initrd.img` with `manifest.json`. Building it unpacks the
packages into a temporary tree, shapes it (cocoon.guest.rootfs), adds modules and agent code,
precompiles the Python code with the image's own interpreter, smoke-tests the imports the agent
depends on with that interpreter, and writes a deterministic cpio.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cocoon.errors import AssetError
from cocoon.guest import apt, cpio, kmods, pycompile, rootfs
from cocoon.guest import cache as cachemod
from cocoon.guest.compress import DEFAULT_COMPRESSION, Compression, compress_file
from cocoon.guest.inputs import Sources, compute_inputs, digest_of
from cocoon.guest.kernel import Kernel, ensure_kernel, find_kernel
from cocoon.guest.progress import Progress, Steps

logger = logging.getLogger("cocoon.guest.image")

# CRIU, which checkpoints and restores a container's processes in the guest (docs/design.md,
# "Checkpoint and restore"), and the libraries it links against (its Python tools are pruned).
CRIU_PACKAGES: tuple[str, ...] = (
    "criu", "libbsd0", "libmd0", "libgnutls30", "libgmp10", "libhogweed6", "libidn2-0",
    "libnettle8", "libp11-kit0", "libtasn1-6", "libunistring2", "libnftables1", "libjansson4",
    "libmnl0", "libnftnl11", "libxtables12", "libprotobuf-c1", "libnl-3-200", "libnet1",
    # GNU tar: CRIU saves and restores a tmpfs (the container's /dev) with its flags
    "tar", "libacl1", "libselinux1", "libpcre2-8-0",
)
# Python (minimal, the standard library, seccomp bindings), busybox, and the shared libraries
# they and protobuf's upb extension (C++) link against.
GUEST_PACKAGES: tuple[str, ...] = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "python3-seccomp", "libseccomp2", "busybox-static",
    "libc6", "libffi8", "zlib1g", "libexpat1", "libstdc++6", "libgcc-s1",
    *CRIU_PACKAGES,
)
PACKAGE_LABEL = "guest-image"
UNUSED_FOR = 3600.0  # seconds after its last use that a superseded image is removed
PYTHON = "/usr/bin/python3.11"
AGENT_LIB = "usr/lib/cocoon"
SYS_PATH = ("/usr/lib/cocoon", "/usr/lib/python3/dist-packages")

# -I: ignore PYTHON* variables (unknown kernel arguments arrive as environment) and keep / off
# sys.path; -S: no site module (faster, nothing to find there); -B: the image is precompiled.
AGENT_INIT = f'''#!{PYTHON} -ISB
"""Cocoon guest init: put the agent on sys.path and run it as PID 1."""
import os
import sys

sys.path[0:0] = {list(SYS_PATH)!r}
os.environ.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
try:
    from cocoon.agent.main import main
    code = main()
except BaseException:
    import traceback
    traceback.print_exc()
    code = 1
print(f"cocoon-init: agent exited with {{code}}; powering off", flush=True)
os.execv("/bin/busybox", ["poweroff", "-f"])
'''.encode()

# Imports the agent cannot run without, tried with the image's own interpreter at build time.
SMOKE_IMPORTS = ("asyncio", "ctypes", "json", "seccomp", "google.protobuf",
                 "google._upb._message")


@dataclass(frozen=True)
class GuestImage:
    initrd: Path
    digest: str
    kernel: Kernel
    manifest: Path  # manifest.json beside the initrd


@dataclass(frozen=True)
class _Plan:
    kernel: Kernel
    packages: dict[str, apt.Package]
    inputs: dict[str, object]
    digest: str
    dest: Path

    def image(self) -> GuestImage:
        return GuestImage(initrd=self.dest / "initrd.img", digest=self.digest,
                          kernel=self.kernel, manifest=self.dest / "manifest.json")


def _plan(cache: Path, kernel: Kernel, packages: dict[str, apt.Package], init: bytes,
          compression: Compression, extra_files: Mapping[str, bytes] | None,
          sources: Sources) -> _Plan:
    inputs = compute_inputs(sources, list(packages.values()), kernel.release,
                            kernel.package_version, kmods.GUEST_MODULES, init, compression,
                            extra_files)
    digest = digest_of(inputs)
    return _Plan(kernel, packages, inputs, digest, cache / "images" / digest[:16])


def _existing(plan: _Plan) -> GuestImage | None:
    image = plan.image()
    manifest = cachemod.read_json(image.manifest)
    if isinstance(manifest, dict) and manifest.get("digest") == plan.digest \
            and image.initrd.is_file():
        with contextlib.suppress(OSError):  # the manifest's mtime records the last use
            os.utime(image.manifest)
        return image
    return None


def prune_unused(cache: Path, keep: Path, unused_for: float = UNUSED_FOR) -> list[str]:
    """Remove images nobody asked for in `unused_for` seconds, except `keep`.

    Every change of an input (an agent file, a package) builds a new 13 MB image, so without
    this the cache grows with every edit. Call it with the images lock held. Returns the names.
    """
    removed: list[str] = []
    cutoff = time.time() - unused_for
    for directory in sorted((cache / "images").iterdir()):
        if directory == keep or directory.name.startswith(".") or not directory.is_dir():
            continue
        try:
            last_use = (directory / "manifest.json").stat().st_mtime
        except FileNotFoundError:
            continue  # not an image (or a half-removed one); leave it alone
        if last_use < cutoff:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory.name)
    if removed:
        logger.info("removed %d guest images unused for %.0f s: %s", len(removed), unused_for,
                    " ".join(removed))
    return removed


def find_guest_image(cache: Path, *, init: bytes = AGENT_INIT,
                     compression: Compression = DEFAULT_COMPRESSION,
                     extra_files: Mapping[str, bytes] | None = None,
                     sources: Sources | None = None,
                     kernel: Kernel | None = None) -> GuestImage | None:
    """The cached image for the present inputs, or None; never builds, fetches or runs apt.
    `kernel`: the image for that kernel (hypervisor.kernel) instead of the cached one's."""
    kernel = kernel or find_kernel(cache)
    packages = apt.lookup(cache, PACKAGE_LABEL, GUEST_PACKAGES)
    if kernel is None or packages is None:
        return None
    plan = _plan(cache, kernel, packages, init, compression, extra_files,
                 sources or Sources.installed())
    return _existing(plan)


def ensure_guest_image(cache: Path, progress: Progress | None = None, *,
                       init: bytes = AGENT_INIT, compression: Compression = DEFAULT_COMPRESSION,
                       extra_files: Mapping[str, bytes] | None = None,
                       sources: Sources | None = None,
                       kernel: Kernel | None = None) -> GuestImage:
    """The image for the present inputs, built on first use (for `kernel`, when given)."""
    kernel = kernel or ensure_kernel(cache, progress)
    steps = Steps(progress, "guest image", 5)
    steps("resolve packages")
    packages = apt.resolve(cache, PACKAGE_LABEL, GUEST_PACKAGES)
    srcs = sources or Sources.installed()
    plan = _plan(cache, kernel, packages, init, compression, extra_files, srcs)
    if (image := _existing(plan)) is not None:
        steps.cached()
        return image
    with cachemod.locked(cache, "images"):
        if (image := _existing(plan)) is not None:
            steps.cached()
            return image
        steps("download packages")
        debs = apt.fetch(cache, packages.values())
        started = time.monotonic()
        with cachemod.building(plan.dest) as tmp:
            tree = tmp / "root"
            steps("assemble tree")
            _assemble(tree, debs, plan, init, extra_files or {}, srcs)
            steps("compile and check Python")
            pycompile.compile_tree(tree, sourceless=[rootfs.PYLIB], cached=[AGENT_LIB])
            backend = pycompile.smoke_test(tree, SYS_PATH, _smoke_imports(init, srcs))
            if backend != "upb":
                raise AssetError(f"protobuf in the image runs its {backend} backend, not upb",
                                 backend=backend)
            steps(f"write initramfs ({compression})")
            sizes = _write_initrd(tree, tmp, compression)
            cachemod.write_json_atomic(tmp / "manifest.json", {
                "digest": plan.digest,
                "inputs": plan.inputs,
                "kernel": {"release": kernel.release, "package": kernel.package,
                           "package_version": kernel.package_version},
                "sizes": sizes,
                "compression": compression,
                "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "build_seconds": round(time.monotonic() - started, 2),
            })
        prune_unused(cache, keep=plan.dest)
    logger.info("guest image %s built", plan.digest[:16])
    return plan.image()


def _smoke_imports(init: bytes, sources: Sources) -> tuple[str, ...]:
    """The agent's own entry point joins the smoke test when the image is meant to run it, with
    its services: the entry point imports them only when it runs, and they import every package
    of AGENT_PATHS the agent needs (cocoon.linux, cocoon.oci, ...), so a package missing there
    fails the build, not the boot."""
    if init == AGENT_INIT and "cocoon/agent/main.py" in sources.agent_files():
        return (*SMOKE_IMPORTS, "cocoon.agent.main", "cocoon.agent.service")
    return SMOKE_IMPORTS


def _assemble(tree: Path, debs: Mapping[str, Path], plan: _Plan, init: bytes,
              extra_files: Mapping[str, bytes], sources: Sources) -> None:
    for name in sorted(debs):
        apt.unpack(debs[name], tree)
    rootfs.merge_usr(tree)
    rootfs.prune(tree)
    rootfs.keep_only_binaries(tree)
    applets = rootfs.busybox_applets(tree / "usr/bin/busybox")
    rootfs.install_applets(tree, [a for a in applets if "/" in a])  # not /linuxrc
    (tree / "usr/bin/python3").symlink_to("python3.11")
    _add_modules(tree, plan.kernel)
    for name, path in {**sources.agent_files(), **sources.protobuf_files()}.items():
        dest = tree / AGENT_LIB / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        dest.chmod(0o755 if path.suffix == ".so" else 0o644)
    etc = tree / "etc"
    (etc / "cocoon").mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    cachemod.write_json_atomic(etc / "cocoon" / "image.json", {
        "digest": plan.digest, "kernel_release": plan.kernel.release})
    (tree / "init").write_bytes(init)
    (tree / "init").chmod(0o755)
    for name, data in sorted(extra_files.items()):
        dest = tree / name.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    for d in ("dev", "proc", "sys", "run", "tmp", "root", "mnt"):
        (tree / d).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    (tree / "root").chmod(0o700)
    rootfs.drop_unloadable_extensions(tree)
    rootfs.check_libraries(tree)


def _add_modules(tree: Path, kernel: Kernel) -> None:
    if kernel.modules_dir is None:  # a custom kernel with its drivers built in
        (tree / "etc/cocoon").mkdir(parents=True, exist_ok=True)
        (tree / "etc/cocoon/modules").write_text("")
        return
    order = kmods.resolve_for(kernel.modules_dir)
    target = tree / "usr/lib/modules" / kernel.release
    for rel in order:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel.modules_dir / rel, dest)
    table = kmods.parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    kept = set(order)
    dep_lines = [f"{path}: {' '.join(deps)}".rstrip()
                 for path, deps in sorted(table.values()) if path in kept]
    (target / "modules.dep").write_text("".join(f"{line}\n" for line in dep_lines))
    listing = "".join(f"/lib/modules/{kernel.release}/{rel}\n" for rel in order)
    (tree / "etc/cocoon").mkdir(parents=True, exist_ok=True)
    (tree / "etc/cocoon/modules").write_text(listing)


def _write_initrd(tree: Path, out_dir: Path, compression: Compression) -> dict[str, int]:
    raw = out_dir / "initrd.cpio"
    entries = [*cpio.entries_from_tree(tree),
               cpio.chardev("dev/console", 5, 1), cpio.chardev("dev/null", 1, 3, 0o666)]
    with raw.open("wb") as f:
        uncompressed = cpio.write(f, entries)
    compress_file(raw, out_dir / "initrd.img", compression)
    raw.unlink()
    files = sum(1 for e in entries if stat.S_ISREG(e.mode))
    shutil.rmtree(tree)
    return {"initrd": (out_dir / "initrd.img").stat().st_size, "uncompressed": uncompressed,
            "files": files, "entries": len(entries)}
