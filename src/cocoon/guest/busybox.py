"""A busybox container root filesystem for the demo and the tests, built without a registry.

Debian's busybox-static gives a self-contained /bin/busybox; around it the smallest root a
runc-style test needs: applet links, users and groups to switch to (uid 1000 "user" with a
supplementary group), a sticky /tmp and the mountpoints the runtime mounts over. The content is
fixed by the busybox package and this file, so the tree (and the OCI archive made from it) is
the same on every host.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from cocoon.guest import apt, rootfs
from cocoon.guest import cache as cachemod
from cocoon.guest.progress import Progress, Steps

logger = logging.getLogger("cocoon.guest.busybox")

PACKAGE = "busybox-static"
USER_UID = 1000
USER_GID = 1000
EXTRA_GID = 100

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    f"user:x:{USER_UID}:{USER_GID}:user:/home/user:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = (
    "root:x:0:\n"
    f"users:x:{EXTRA_GID}:user\n"
    f"user:x:{USER_GID}:\n"
    "nogroup:x:65534:\n"
)
# Directories and their modes; owners other than root are listed in OWNERS.
DIRECTORIES: dict[str, int] = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "home/user": 0o755,
    "proc": 0o755, "root": 0o700, "sys": 0o755, "tmp": 0o1777, "var": 0o755,
}
OWNERS: dict[str, tuple[int, int]] = {"home/user": (USER_UID, USER_GID)}
FILES: dict[str, str] = {
    "etc/passwd": PASSWD,
    "etc/group": GROUP,
    "etc/hostname": "cocoon\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
}


def _key(pkg: apt.Package) -> str:
    h = hashlib.sha256(f"{pkg.name}\0{pkg.version}\0{pkg.sha256}\0".encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def ensure_busybox_rootfs(cache: Path, progress: Progress | None = None) -> Path:
    """`<cache>/busybox/<key16>/rootfs`, built on first use. Treat it as read-only."""
    steps = Steps(progress, "busybox rootfs", 3)
    steps("resolve busybox")
    pkg = apt.resolve(cache, "busybox", [PACKAGE])[PACKAGE]
    dest = cache / "busybox" / _key(pkg)[:16]
    root = dest / "rootfs"
    if (dest / "complete").is_file():
        steps.cached()
        return root
    with cachemod.locked(cache, "busybox"):
        if (dest / "complete").is_file():
            steps.cached()
            return root
        steps("download busybox")
        deb = apt.fetch(cache, [pkg])[PACKAGE]
        steps("assemble rootfs")
        with cachemod.building(dest) as tmp:
            unpacked = tmp / "pkg"
            apt.unpack(deb, unpacked)
            _populate(tmp / "rootfs", unpacked / "bin" / "busybox")
            shutil.rmtree(unpacked)
            (tmp / "complete").write_text(f"{pkg.name} {pkg.version}\n")
    logger.info("busybox rootfs ready: %s", root)
    return root


def _populate(root: Path, busybox: Path) -> None:
    root.mkdir()
    for rel, mode in sorted(DIRECTORIES.items()):
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    names = sorted({rel.rsplit("/", 1)[-1] for rel in rootfs.busybox_applets(busybox)})
    rootfs.install_applets(root, (f"bin/{name}" for name in names if name != "busybox"),
                           busybox_path="busybox", usr_merged=False)
    for rel, text in sorted(FILES.items()):
        (root / rel).write_text(text)
        (root / rel).chmod(0o644)
    if os.geteuid() == 0:
        for rel, (uid, gid) in OWNERS.items():
            os.chown(root / rel, uid, gid)
