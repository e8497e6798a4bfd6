"""The QMP commands that add a share or a NIC to a restored VM, as QEMU 7.2 takes them."""

from __future__ import annotations

from pathlib import Path

from cocoon.hypervisor.config import NetInterface, VirtioFsShare
from cocoon.hypervisor.hotplug import nic_commands, share_commands, tap_fd_name


def test_share_is_a_client_chardev_then_a_device_in_its_port() -> None:
    commands = share_commands(0, VirtioFsShare("cocoon", Path("/run/vm/vfs.sock")), port=2)
    assert commands == [
        ("chardev-add", {"id": "fs0", "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": "/run/vm/vfs.sock"}}, "server": False}}}),
        ("device_add", {"driver": "vhost-user-fs-pci", "id": "vfs0", "chardev": "fs0",
                        "tag": "cocoon", "queue-size": 1024, "bus": "hp2"}),
    ]


def test_nic_uses_the_fd_sent_under_its_name_and_keeps_mac_and_mtu() -> None:
    nic = NetInterface("52:54:00:00:00:01", tap_fd=5, mtu=1400)
    assert nic_commands(1, nic, port=3) == [
        ("netdev_add", {"type": "tap", "id": "net1", "fd": tap_fd_name(1)}),
        ("device_add", {"driver": "virtio-net-pci", "id": "nic1", "netdev": "net1",
                        "mac": "52:54:00:00:00:01", "host_mtu": 1400, "bus": "hp3"}),
    ]
    assert tap_fd_name(1) == "tap1"


def test_a_user_mode_nic_needs_no_fd_and_has_no_ipv6() -> None:
    nic = NetInterface("02:c0:c0:00:00:01", mtu=1500, user=True)
    assert nic_commands(2, nic, port=1) == [
        ("netdev_add", {"type": "user", "id": "net2", "ipv6": False}),
        ("device_add", {"driver": "virtio-net-pci", "id": "nic2", "netdev": "net2",
                        "mac": "02:c0:c0:00:00:01", "host_mtu": 1500, "bus": "hp1"}),
    ]
