"""VMConfig validation: every inconsistency is refused with the field named, and only those."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import HypervisorError
from cocoon.hypervisor.config import (
    KVM_CPU,
    QBOOT,
    TCG_CPU,
    MemoryBackend,
    NetInterface,
    VirtioFsShare,
    VMConfig,
    VMConfigError,
)

SHARED = MemoryBackend("memfd")


def make(**overrides: Any) -> VMConfig:
    fields: dict[str, Any] = {
        "name": "vm-1", "kernel": Path("/k/vmlinuz"), "initrd": Path("/k/initrd.img"),
        "qmp_socket": Path("/run/cocoon/vm-1/qmp.sock"),
        "console_log": Path("/run/cocoon/vm-1/console.log"),
    }
    fields.update(overrides)
    return VMConfig(**fields)


def refused(field: str, **overrides: Any) -> VMConfigError:
    with pytest.raises(VMConfigError) as info:
        make(**overrides)
    assert info.value.field == field, info.value
    assert info.value.evidence["field"] == field
    return info.value


def test_defaults_are_valid_and_documented() -> None:
    config = make()
    assert (config.memory_mib, config.vcpus, config.accel, config.machine) == (256, 1, "tcg", "pc")
    assert config.tb_size_mib == 32
    assert config.cpu == TCG_CPU == "qemu64,+rdrand"
    assert config.firmware_path == QBOOT
    assert config.socket_paths == (Path("/run/cocoon/vm-1/qmp.sock"),)


def test_cpu_follows_accel_unless_given() -> None:
    assert make(accel="kvm").cpu == KVM_CPU == "host"
    assert make(accel="kvm", cpu_model="max").cpu == "max"


def test_firmware_defaults_by_machine() -> None:
    assert make(machine="q35").firmware_path == QBOOT
    assert make(machine="microvm").firmware_path is None
    assert make(firmware=Path("/fw.bin")).firmware_path == Path("/fw.bin")


def test_error_belongs_to_the_hypervisor_layer() -> None:
    err = refused("memory_mib", memory_mib=16)
    assert isinstance(err, HypervisorError)
    assert err.evidence["value"] == 16
    assert "memory_mib" in str(err)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "a/b", "é"])
def test_bad_names(name: str) -> None:
    refused("name", name=name)


@pytest.mark.parametrize(("field", "value"), [
    ("accel", "hvf"), ("machine", "virt"), ("memory_mib", 63), ("vcpus", 0), ("vcpus", 256),
    ("tb_size_mib", 0), ("cpu_model", ""), ("cpu_model", "qemu64 +rdrand"),
])
def test_bad_scalars(field: str, value: object) -> None:
    refused(field, **{field: value})


@pytest.mark.parametrize("arg", ["", "a\nb", "x\0"])
def test_kernel_args_are_single_lines(arg: str) -> None:
    refused("kernel_args", kernel_args=("quiet", arg))


def test_socket_path_length_is_checked() -> None:
    long_path = Path("/" + "d" * 100 + "/qmp.sock")
    err = refused("qmp_socket", qmp_socket=long_path)
    assert err.evidence["length"] > 107
    refused("agent_socket", agent_socket=long_path)
    refused("shares[0].socket", memory_backend=SHARED,
            shares=(VirtioFsShare("root", long_path),))
    make(qmp_socket=Path("/" + "d" * 106))  # exactly 107 bytes is still fine
    refused("stdio_sockets[1]", agent_socket=Path("/a.sock"),
            stdio_sockets=(Path("/io0.sock"), long_path))


def test_stdio_ports_sit_on_the_agent_device() -> None:
    refused("stdio_sockets", stdio_sockets=(Path("/io0.sock"),))
    refused("stdio_sockets", agent_socket=Path("/a.sock"),
            stdio_sockets=tuple(Path(f"/io{k}.sock") for k in range(31)))
    config = make(agent_socket=Path("/a.sock"), stdio_sockets=(Path("/io0.sock"),))
    assert config.socket_paths == (config.qmp_socket, Path("/a.sock"), Path("/io0.sock"))


def test_virtio_fs_needs_shared_memory() -> None:
    share = VirtioFsShare("root", Path("/run/fs.sock"))
    err = refused("memory_backend", shares=(share,))
    assert err.evidence["shares"] == ["root"]
    refused("memory_backend", shares=(share,), memory_backend=MemoryBackend("memfd", share=False))
    make(shares=(share,), memory_backend=SHARED)
    make(shares=(share,), memory_backend=MemoryBackend("file", Path("/dev/shm/ram")))


def test_memory_backend_shapes() -> None:
    refused("memory_backend.path", memory_backend=MemoryBackend("file"))
    refused("memory_backend.path", memory_backend=MemoryBackend("memfd", Path("/x")))
    refused("memory_backend.kind", memory_backend=MemoryBackend("hugetlb"))  # type: ignore[arg-type]
    make(memory_backend=MemoryBackend("file", Path("/tmpl/ram"), share=False))


def test_share_tags_and_queues() -> None:
    sock = Path("/run/fs.sock")
    refused("shares[0].tag", memory_backend=SHARED, shares=(VirtioFsShare("", sock),))
    refused("shares[0].tag", memory_backend=SHARED, shares=(VirtioFsShare("t" * 37, sock),))
    refused("shares[1].queue_size", memory_backend=SHARED,
            shares=(VirtioFsShare("a", sock), VirtioFsShare("b", sock, queue_size=1000)))
    refused("shares", memory_backend=SHARED,
            shares=(VirtioFsShare("a", sock), VirtioFsShare("a", Path("/run/other.sock"))))
    make(memory_backend=SHARED, shares=(VirtioFsShare("t" * 36, sock),))


@pytest.mark.parametrize(("nic", "field"), [
    (NetInterface("52:54:00:00:00:01"), "nics[0]"),
    (NetInterface("52:54:00:00:00:01", tap_fd=3, ifname="tap0"), "nics[0]"),
    (NetInterface("52:54:00:00:00:01", tap_fd=-1), "nics[0].tap_fd"),
    (NetInterface("52:54:00:00:00:01", ifname="a-very-long-tap-name"), "nics[0].ifname"),
    (NetInterface("52:54:00:00:00:01", ifname="tap 0"), "nics[0].ifname"),
    (NetInterface("52:54:00:00:00", tap_fd=3), "nics[0].mac"),
    (NetInterface("52:54:00:00:00:0G", tap_fd=3), "nics[0].mac"),
    (NetInterface("52:54:00:AA:00:01", tap_fd=3), "nics[0].mac"),
    (NetInterface("01:00:5e:00:00:01", tap_fd=3), "nics[0].mac"),
    (NetInterface("52:54:00:00:00:01", tap_fd=3, mtu=67), "nics[0].mtu"),
    (NetInterface("52:54:00:00:00:01", tap_fd=3, mtu=65536), "nics[0].mtu"),
    (NetInterface("52:54:00:00:00:01", tap_fd=3, user=True), "nics[0]"),
    (NetInterface("52:54:00:00:00:01", user=True, vhost=True), "nics[0]"),
])
def test_bad_nics(nic: NetInterface, field: str) -> None:
    refused(field, nics=(nic,))


def test_nic_macs_are_unique() -> None:
    nic = NetInterface("52:54:00:00:00:01", tap_fd=3)
    refused("nics", nics=(nic, dataclasses.replace(nic, tap_fd=4)))
    make(nics=(nic, NetInterface("52:54:00:00:00:02", ifname="tap1", mtu=1400, vhost=True),
               NetInterface("52:54:00:00:00:03", user=True)))


@pytest.mark.parametrize("cid", [0, 1, 2, 2**32 - 1])
def test_vsock_cid_range(cid: int) -> None:
    refused("vsock_cid", vsock_cid=cid)


def test_vsock_cid_valid() -> None:
    assert make(vsock_cid=3).vsock_cid == 3


def test_hotplug_ports_need_q35() -> None:
    refused("hotplug_ports", hotplug_ports=2)
    refused("hotplug_ports", hotplug_ports=2, machine="microvm")
    refused("hotplug_ports", hotplug_ports=33, machine="q35")
    refused("hotplug_ports", hotplug_ports=-1)
    assert make(hotplug_ports=4, machine="q35").hotplug_ports == 4


def test_replace_validates_again() -> None:
    config = make()
    with pytest.raises(VMConfigError):
        dataclasses.replace(config, vcpus=0)


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().vcpus = 2  # type: ignore[misc]
