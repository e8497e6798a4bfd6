"""Adding shares and NICs to a running (restored) VM: the QMP commands, as pure functions.

A restored VM must start with exactly the devices of the VM that was saved, and a template has
none of a sandbox's own: its virtio-fs share and its NICs are added afterwards, each into an
empty PCIe root port (`hp<k>`), backends first (a vhost-user chardev; a tap netdev whose fd
is passed over the QMP socket and named with `getfd`), then the device. The ids are the ones the
command line gives the same devices in a cold boot, so both paths name them alike.
"""

from __future__ import annotations

from pathlib import Path

from cocoon.hypervisor.cmdline import fs_device, net_device, user_netdev
from cocoon.hypervisor.config import NetInterface, VirtioFsShare


def share_commands(index: int, share: VirtioFsShare, port: int
                   ) -> list[tuple[str, dict[str, object]]]:
    """`chardev-add` for virtiofsd's socket, then `device_add` of the vhost-user-fs device."""
    chardev: dict[str, object] = {
        "id": f"fs{index}",
        "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": str(Path(share.socket))}},
            "server": False}}}
    return [("chardev-add", chardev),
            ("device_add", {**fs_device(index, share), "bus": f"hp{port}"})]


def tap_fd_name(index: int) -> str:
    return f"tap{index}"


def nic_commands(index: int, nic: NetInterface, port: int
                 ) -> list[tuple[str, dict[str, object]]]:
    """`netdev_add` of a tap whose fd was sent as `tap_fd_name(index)` (or of a user-mode
    network), then `device_add`."""
    netdev: dict[str, object] = {"type": "tap", "id": f"net{index}", "fd": tap_fd_name(index)}
    if nic.user:
        netdev = user_netdev(index)
    elif nic.vhost:
        netdev["vhost"] = True
    return [("netdev_add", netdev),
            ("device_add", {**net_device(index, nic), "bus": f"hp{port}"})]
