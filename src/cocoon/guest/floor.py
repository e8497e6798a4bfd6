"""The floor initrd: busybox alone, printing a marker and powering off.

It is the baseline every start-time figure is compared with (the same kernel and QEMU with
nothing of ours in the guest) and the payload of the KVM probe, so it must do as little as
possible: one line on the console, then `poweroff -f` without any shutdown sequence.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from cocoon.guest import apt, cpio
from cocoon.guest import cache as cachemod
from cocoon.guest.progress import Progress, Steps

logger = logging.getLogger("cocoon.guest.floor")

MARKER = "COCOON-FLOOR-OK"
PACKAGE = "busybox-static"
FLOOR_INIT = (f"#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n"
              "/bin/busybox poweroff -f\n").encode()


def _key(busybox: apt.Package) -> str:
    h = hashlib.sha256()
    h.update(f"{busybox.name}\0{busybox.version}\0{busybox.sha256}\0".encode())
    h.update(FLOOR_INIT)
    h.update(Path(__file__).read_bytes())
    h.update(Path(cpio.__file__).read_bytes())
    return h.hexdigest()


def ensure_floor_initrd(cache: Path, progress: Progress | None = None) -> Path:
    """`<cache>/floor/<key16>/initrd.img`, built on first use."""
    steps = Steps(progress, "floor initrd", 3)
    steps("resolve busybox")
    pkg = apt.resolve(cache, "busybox", [PACKAGE])[PACKAGE]
    dest = cache / "floor" / _key(pkg)[:16]
    initrd = dest / "initrd.img"
    if initrd.is_file():
        steps.cached()
        return initrd
    with cachemod.locked(cache, "floor"):
        if initrd.is_file():
            steps.cached()
            return initrd
        steps("download busybox")
        deb = apt.fetch(cache, [pkg])[PACKAGE]
        steps("write initramfs")
        with cachemod.building(dest) as tmp:
            unpacked = tmp / "pkg"
            apt.unpack(deb, unpacked)
            entries = [
                cpio.directory("bin"), cpio.directory("dev"), cpio.directory("proc"),
                cpio.regular("bin/busybox", (unpacked / "bin/busybox").read_bytes(), 0o755),
                cpio.chardev("dev/console", 5, 1),
                cpio.regular("init", FLOOR_INIT, 0o755),
            ]
            # uncompressed: 2 MB, and the KVM probe then needs no lz4 tool on the host
            with (tmp / "initrd.img").open("wb") as f:
                cpio.write(f, entries)
            shutil.rmtree(unpacked)
    logger.info("floor initrd ready: %s", initrd)
    return initrd
