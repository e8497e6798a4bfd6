"""Kernel modules for the guest: which files, and in which order the agent loads them.

The cloud kernel builds every virtio driver as a module and nothing loads them for us (no udev,
no modprobe in the guest), so the image carries the modules the agent needs plus everything they
depend on, and a flat list in load order: the agent only has to finit_module each path in turn.
Dependencies come from `modules.dep`, which `depmod -b` writes for the unpacked kernel tree.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cocoon.errors import AssetError

logger = logging.getLogger("cocoon.guest.kmods")

# What the agent needs: the virtio transport and devices, the virtio-fs share (fuse underneath),
# vsock, and the filesystems it stacks container roots and read-only images with.
GUEST_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_console",
    "virtio_net",
    "virtio_blk",
    "fuse",
    "virtiofs",
    "virtio_balloon",  # free page reporting: memory the guest frees goes back to the host
    "vmw_vsock_virtio_transport",
    "overlay",
    "erofs",
    # the socket diagnostics CRIU reads a checkpointed container's sockets through
    "unix_diag", "inet_diag", "tcp_diag", "udp_diag", "netlink_diag", "af_packet_diag",
)


def module_name(path: str) -> str:
    """`kernel/fs/fuse/virtiofs.ko` -> `virtiofs` (dashes and underscores are the same)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep -> {name: (path, [paths of every module it depends on])}."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, _, deps = line.partition(":")
        table[module_name(path)] = (path.strip(), deps.split())
    return table


def parse_builtin(text: str) -> set[str]:
    """modules.builtin: modules compiled into the kernel (nothing to load for them)."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def load_order(wanted: Sequence[str], dep_table: Mapping[str, tuple[str, list[str]]],
               builtin: Iterable[str] = ()) -> list[str]:
    """Paths of `wanted` and their dependencies, each after everything it depends on.

    The order is deterministic: the wanted modules in the order given, each preceded by its
    not yet listed dependencies in sorted order. Built-in modules are skipped; an unknown one is
    an error naming it.
    """
    builtin_set = {module_name(b) for b in builtin}
    by_path = {path: name for name, (path, _) in dep_table.items()}
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            raise AssetError(f"module dependency cycle: {' -> '.join((*chain, name))}",
                             cycle=[*chain, name])
        if name not in dep_table:
            raise AssetError(f"kernel module {name!r} not found in modules.dep",
                             module=name, needed_by=list(chain))
        visiting.add(name)
        path, deps = dep_table[name]
        for dep in sorted(by_path.get(d, module_name(d)) for d in deps):
            visit(dep, (*chain, name))
        visiting.discard(name)
        done.add(name)
        order.append(path)

    for raw in wanted:
        name = module_name(raw)
        if name in builtin_set:
            logger.debug("module %s is built into the kernel", name)
            continue
        visit(name, ())
    return order


def run_depmod(root: Path, release: str, depmod: str) -> None:
    """Run `depmod -b root release` so root/lib/modules/<release>/modules.dep exists."""
    cmd = [depmod, "-b", str(root), release]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssetError(f"depmod failed for {release}: {proc.stderr.strip()}",
                         command=cmd, returncode=proc.returncode)


def resolve_for(modules_dir: Path, wanted: Sequence[str] = GUEST_MODULES) -> list[str]:
    """Load order (paths relative to `modules_dir`) for a kernel tree depmod has indexed."""
    dep_file = modules_dir / "modules.dep"
    try:
        dep_text = dep_file.read_text()
    except FileNotFoundError as err:
        raise AssetError(f"{dep_file} is missing: depmod has not run on this kernel tree",
                         path=str(dep_file)) from err
    builtin_file = modules_dir / "modules.builtin"
    builtin = parse_builtin(builtin_file.read_text()) if builtin_file.exists() else set()
    return load_order(wanted, parse_modules_dep(dep_text), builtin)
