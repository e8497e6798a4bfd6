"""Module load order: every module after all it depends on, deterministic, from modules.dep."""

from __future__ import annotations

import pytest

from cocoon.errors import AssetError
from cocoon.guest import kmods

# The shape of the cloud kernel's real modules.dep for these modules (transitive lists).
MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/fs/fuse/fuse.ko:
kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: \
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko kernel/net/vmw_vsock/vsock.ko
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/loop-extra.ko:
""".replace("\\\n", "")


def _table() -> dict[str, tuple[str, list[str]]]:
    return kmods.parse_modules_dep(MODULES_DEP)


def _name(path: str) -> str:
    return kmods.module_name(path)


def test_dependencies_come_first() -> None:
    table = _table()
    order = kmods.load_order(["virtiofs", "virtio_pci", "vmw_vsock_virtio_transport"], table)
    names = [_name(p) for p in order]
    position = {n: i for i, n in enumerate(names)}
    for name in names:
        for dep in table[name][1]:
            assert position[_name(dep)] < position[name], f"{dep} must precede {name}"
    assert len(names) == len(set(names)), "each module listed once"
    assert set(names) == {"virtio", "virtio_ring", "fuse", "virtiofs", "virtio_pci",
                          "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "vsock",
                          "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}


def test_order_is_deterministic_and_follows_the_request() -> None:
    first = kmods.load_order(["fuse", "overlay", "virtio_console"], _table())
    assert first == kmods.load_order(["fuse", "overlay", "virtio_console"], _table())
    assert [_name(p) for p in first] == ["fuse", "overlay", "virtio", "virtio_ring",
                                         "virtio_console"]


def test_names_normalise_dashes_and_suffixes() -> None:
    assert kmods.module_name("kernel/drivers/block/loop-extra.ko") == "loop_extra"
    assert kmods.module_name("kernel/fs/erofs/erofs.ko.xz") == "erofs"
    assert kmods.load_order(["loop-extra"], _table()) == ["kernel/drivers/block/loop-extra.ko"]


def test_builtin_modules_are_skipped() -> None:
    builtin = kmods.parse_builtin("kernel/fs/overlayfs/overlay.ko\n")
    assert kmods.load_order(["overlay", "fuse"], _table(), builtin) == ["kernel/fs/fuse/fuse.ko"]


def test_unknown_module_is_an_error_naming_it() -> None:
    with pytest.raises(AssetError, match="'nosuchmod' not found") as info:
        kmods.load_order(["nosuchmod"], _table())
    assert info.value.evidence["module"] == "nosuchmod"


def test_cycle_is_an_error() -> None:
    table = kmods.parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(AssetError, match="cycle"):
        kmods.load_order(["a"], table)


def test_guest_list_names_the_needed_drivers() -> None:
    needed = {"virtio_pci", "virtio_console", "virtio_net", "virtio_blk", "virtiofs", "fuse",
              "vmw_vsock_virtio_transport", "overlay", "erofs"}
    assert needed <= set(kmods.GUEST_MODULES)
