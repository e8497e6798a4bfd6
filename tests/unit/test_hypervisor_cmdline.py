"""The QEMU command line: each option of a VMConfig appears exactly as QEMU 7.2 expects it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cocoon.hypervisor.cmdline import build_command, kernel_command_line
from cocoon.hypervisor.config import (
    MemoryBackend,
    NetInterface,
    VirtioFsShare,
    VMConfig,
    VMConfigError,
)
from cocoon.hypervisor.hostclock import host_tsc_khz


def make(**overrides: Any) -> VMConfig:
    fields: dict[str, Any] = {
        "name": "vm-1", "kernel": Path("/k/vmlinuz"), "initrd": Path("/k/initrd.img"),
        "qmp_socket": Path("/run/vm/qmp.sock"), "console_log": Path("/run/vm/console.log"),
    }
    fields.update(overrides)
    return VMConfig(**fields)


def values(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag`, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def one(argv: list[str], flag: str) -> str:
    found = values(argv, flag)
    assert len(found) == 1, (flag, found)
    return found[0]


def devices(argv: list[str], driver: str) -> list[str]:
    return [d for d in values(argv, "-device") if d.split(",", 1)[0] == driver]


def props(option: str) -> dict[str, str]:
    """`a,b=c,d=e,,f` -> {'': 'a', 'b': 'c', 'd': 'e,f'} (QEMU's ',,' escape undone)."""
    parts = re.split(r"(?<!,),(?!,)", option.replace(",,", "\0"))
    result = {"": parts[0].replace("\0", ",")}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        result[key] = value.replace("\0", ",")
    return result


def test_default_command() -> None:
    argv = build_command(make())
    assert argv[0] == "qemu-system-x86_64"
    assert one(argv, "-name") == "vm-1"
    assert one(argv, "-machine") == "pc"
    assert one(argv, "-accel") == "tcg,tb-size=32"
    assert one(argv, "-cpu") == "qemu64,+rdrand"
    assert one(argv, "-m") == "256M"
    assert one(argv, "-smp") == "1"
    assert one(argv, "-bios") == "/usr/share/qemu/qboot.rom"
    assert one(argv, "-kernel") == "/k/vmlinuz"
    assert one(argv, "-initrd") == "/k/initrd.img"
    assert one(argv, "-append") == "console=ttyS0 quiet panic=-1"
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert argv.count(flag) == 1, flag
    for absent in ("-object", "-device", "-netdev", "-pidfile", "-enable-kvm"):
        assert absent not in argv, absent
    assert all(isinstance(arg, str) and arg for arg in argv)


def test_seccomp_sandbox_is_on_by_default_with_every_group_denied() -> None:
    sandbox = props(one(build_command(make()), "-sandbox"))
    assert sandbox == {"": "on", "obsolete": "deny", "elevateprivileges": "deny",
                       "spawn": "deny", "resourcecontrol": "deny"}
    assert "-sandbox" not in build_command(make(seccomp=False))
    assert "-runas" not in build_command(make())  # elevateprivileges=deny forbids setuid


def test_console_goes_to_the_log_file_in_append_mode() -> None:
    argv = build_command(make())
    console = [props(c) for c in values(argv, "-chardev") if props(c)["id"] == "console"]
    assert console == [{"": "file", "id": "console", "path": "/run/vm/console.log",
                        "append": "on"}]
    assert one(argv, "-serial") == "chardev:console"


def test_qmp_is_a_server_socket_that_does_not_wait() -> None:
    argv = build_command(make())
    qmp = [props(c) for c in values(argv, "-chardev") if props(c)["id"] == "qmp"]
    assert qmp == [{"": "socket", "id": "qmp", "path": "/run/vm/qmp.sock", "server": "on",
                    "wait": "off"}]
    assert one(argv, "-mon") == "chardev=qmp,mode=control"


def test_kvm_uses_host_cpu_and_no_tcg_options() -> None:
    argv = build_command(make(accel="kvm"))
    assert one(argv, "-accel") == "kvm"
    assert one(argv, "-cpu") == "host"
    assert "tb-size" not in " ".join(argv)


def test_tb_size_can_be_left_to_qemu() -> None:
    assert one(build_command(make(tb_size_mib=None)), "-accel") == "tcg"
    assert one(build_command(make(tb_size_mib=64)), "-accel") == "tcg,tb-size=64"


def test_size_and_cpus() -> None:
    argv = build_command(make(memory_mib=512, vcpus=2, cpu_model="max"))
    assert (one(argv, "-m"), one(argv, "-smp"), one(argv, "-cpu")) == ("512M", "2", "max")


def test_agent_channel_is_a_named_virtserialport() -> None:
    argv = build_command(make(agent_socket=Path("/run/vm/agent.sock")))
    assert devices(argv, "virtio-serial-pci") == ["virtio-serial-pci,id=vser0"]
    port = [props(d) for d in devices(argv, "virtserialport")]
    assert port == [{"": "virtserialport", "bus": "vser0.0", "chardev": "agent",
                     "name": "cocoon.agent"}]
    agent = [props(c) for c in values(argv, "-chardev") if props(c)["id"] == "agent"]
    assert agent == [{"": "socket", "id": "agent", "path": "/run/vm/agent.sock",
                      "server": "on", "wait": "off"}]


def test_stdio_ports_are_named_virtserialports_on_the_agent_device() -> None:
    argv = build_command(make(agent_socket=Path("/run/vm/agent.sock"),
                              stdio_sockets=(Path("/run/vm/io0.sock"), Path("/run/vm/io1.sock"))))
    assert devices(argv, "virtio-serial-pci") == ["virtio-serial-pci,id=vser0"]
    ports = [props(d) for d in devices(argv, "virtserialport")]
    assert ports[1:] == [{"": "virtserialport", "bus": "vser0.0", "chardev": f"stdio{k}",
                          "id": f"vsp{k}", "name": f"cocoon.stdio.{k}"} for k in (0, 1)]
    chardevs = [props(c) for c in values(argv, "-chardev") if props(c)["id"] == "stdio1"]
    assert chardevs == [{"": "socket", "id": "stdio1", "path": "/run/vm/io1.sock",
                         "server": "on", "wait": "off"}]


def test_memfd_backend_is_the_machine_ram() -> None:
    argv = build_command(make(memory_backend=MemoryBackend("memfd"), memory_mib=512))
    assert one(argv, "-object") == "memory-backend-memfd,id=ram,size=512M,share=on"
    assert one(argv, "-machine") == "pc,memory-backend=ram"


def test_file_backend_private_mapping() -> None:
    backend = MemoryBackend("file", Path("/tmpl/ram"), share=False)
    argv = build_command(make(memory_backend=backend))
    assert props(one(argv, "-object")) == {"": "memory-backend-file", "id": "ram",
                                           "size": "256M", "mem-path": "/tmpl/ram",
                                           "share": "off"}


def test_virtio_fs_shares() -> None:
    shares = (VirtioFsShare("root", Path("/run/vm/fs0.sock")),
              VirtioFsShare("vol1", Path("/run/vm/fs1.sock"), queue_size=256))
    argv = build_command(make(memory_backend=MemoryBackend(), shares=shares))
    assert devices(argv, "vhost-user-fs-pci") == [
        "vhost-user-fs-pci,id=vfs0,chardev=fs0,tag=root,queue-size=1024",
        "vhost-user-fs-pci,id=vfs1,chardev=fs1,tag=vol1,queue-size=256",
    ]
    chardevs = {props(c)["id"]: props(c) for c in values(argv, "-chardev")}
    assert chardevs["fs0"] == {"": "socket", "id": "fs0", "path": "/run/vm/fs0.sock"}
    assert chardevs["fs1"]["path"] == "/run/vm/fs1.sock"


def test_tap_by_fd_and_by_name() -> None:
    nics = (NetInterface("52:54:00:00:00:01", tap_fd=7, mtu=1400),
            NetInterface("52:54:00:00:00:02", ifname="tap1", vhost=True))
    argv = build_command(make(nics=nics))
    assert values(argv, "-netdev") == [
        "tap,id=net0,fd=7",
        "tap,id=net1,ifname=tap1,script=no,downscript=no,vhost=on",
    ]
    assert devices(argv, "virtio-net-pci") == [
        "virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:00:00:01,host_mtu=1400",
        "virtio-net-pci,id=nic1,netdev=net1,mac=52:54:00:00:00:02",
    ]


def test_user_mode_nic_is_slirp_without_ipv6() -> None:
    argv = build_command(make(nics=(NetInterface("02:c0:c0:00:00:01", user=True),)))
    assert values(argv, "-netdev") == ["user,id=net0,ipv6=off"]
    assert devices(argv, "virtio-net-pci") == [
        "virtio-net-pci,id=nic0,netdev=net0,mac=02:c0:c0:00:00:01"]


def test_vsock() -> None:
    argv = build_command(make(vsock_cid=42))
    assert devices(argv, "vhost-vsock-pci") == ["vhost-vsock-pci,guest-cid=42"]


def test_hotplug_ports_on_q35() -> None:
    argv = build_command(make(machine="q35", hotplug_ports=3))
    ports = [props(d) for d in devices(argv, "pcie-root-port")]
    assert [p["id"] for p in ports] == ["hp0", "hp1", "hp2"]
    assert len({p["chassis"] for p in ports}) == 3
    assert {p["bus"] for p in ports} == {"pcie.0"}
    assert one(argv, "-machine") == "q35"
    assert one(argv, "-bios") == "/usr/share/qemu/qboot.rom"


def test_microvm_gets_a_pcie_bus_and_keeps_its_own_bios() -> None:
    argv = build_command(make(machine="microvm", agent_socket=Path("/run/vm/a.sock"),
                              memory_backend=MemoryBackend(),
                              shares=(VirtioFsShare("root", Path("/run/vm/fs.sock")),),
                              nics=(NetInterface("52:54:00:00:00:01", tap_fd=5),),
                              vsock_cid=3))
    assert "-bios" not in argv
    assert one(argv, "-machine") == "microvm,pcie=on,memory-backend=ram"
    drivers = [d.split(",", 1)[0] for d in values(argv, "-device")]
    assert drivers == ["virtio-serial-pci", "virtserialport", "vhost-vsock-pci",
                       "vhost-user-fs-pci", "virtio-net-pci"]


def test_explicit_firmware_and_pidfile() -> None:
    argv = build_command(make(firmware=Path("/usr/share/seabios/bios-256k.bin"),
                              pidfile=Path("/run/vm/qemu.pid")))
    assert one(argv, "-bios") == "/usr/share/seabios/bios-256k.bin"
    assert one(argv, "-pidfile") == "/run/vm/qemu.pid"


def test_no_initrd() -> None:
    assert "-initrd" not in build_command(make(initrd=None))


def test_commas_in_paths_are_escaped() -> None:
    argv = build_command(make(qmp_socket=Path("/run/a,b/qmp.sock"),
                              console_log=Path("/run/a,b/console.log"),
                              memory_backend=MemoryBackend("file", Path("/t,m/ram"))))
    chardevs = values(argv, "-chardev")
    assert "socket,id=qmp,path=/run/a,,b/qmp.sock,server=on,wait=off" in chardevs
    assert props(next(c for c in chardevs if "id=console" in c))["path"] == "/run/a,b/console.log"
    assert props(one(argv, "-object"))["mem-path"] == "/t,m/ram"


def test_every_referenced_chardev_and_netdev_exists_once() -> None:
    argv = build_command(make(
        agent_socket=Path("/run/vm/agent.sock"), memory_backend=MemoryBackend(),
        shares=(VirtioFsShare("root", Path("/run/vm/fs.sock")),),
        nics=(NetInterface("52:54:00:00:00:01", tap_fd=5),)))
    chardev_ids = [props(c)["id"] for c in values(argv, "-chardev")]
    assert len(chardev_ids) == len(set(chardev_ids))
    monitors = [f"mon,{m}" for m in values(argv, "-mon")]  # -mon has no driver name
    referenced = [props(d)["chardev"] for d in values(argv, "-device") + monitors
                  if "chardev" in props(d)]
    assert sorted(referenced) == sorted(set(chardev_ids) - {"console"})
    netdev_ids = [props(n)["id"] for n in values(argv, "-netdev")]
    assert [props(d)["netdev"] for d in devices(argv, "virtio-net-pci")] == netdev_ids


@pytest.mark.parametrize(("args", "expected"), [
    ((), "console=ttyS0 quiet panic=-1"),
    (("init=/sbin/agent", "cocoon.debug=1"),
     "console=ttyS0 quiet panic=-1 init=/sbin/agent cocoon.debug=1"),
    (("console=hvc0",), "quiet panic=-1 console=hvc0"),
    (("panic=5",), "console=ttyS0 quiet panic=5"),
    (("debug",), "console=ttyS0 panic=-1 debug"),
    (("loglevel=7",), "console=ttyS0 panic=-1 loglevel=7"),
    (("quiet",), "console=ttyS0 panic=-1 quiet"),
])
def test_kernel_command_line(args: tuple[str, ...], expected: str) -> None:
    config = make(kernel_args=args)
    assert kernel_command_line(config) == expected
    assert one(build_command(config), "-append") == expected


def test_build_is_pure_and_repeatable() -> None:
    config = make(agent_socket=Path("/nonexistent/agent.sock"), kernel=Path("/nonexistent/k"))
    assert build_command(config) == build_command(config)


# --- templates: restore and hot-plug -------------------------------------------------------------


def test_restore_waits_for_qmp_and_inherits_the_state_fd() -> None:
    config = make(machine="q35", hotplug_ports=2, incoming_fd=7, ignore_shared_ram=True,
                  memory_backend=MemoryBackend("file", Path("/t/ram"), share=False))
    argv = build_command(config)
    assert one(argv, "-incoming") == "defer"  # QMP sets x-ignore-shared, then reads fd 7
    assert props(one(argv, "-object")) == {
        "": "memory-backend-file", "id": "ram", "size": "256M", "mem-path": "/t/ram",
        "share": "off"}
    assert 7 in config.inherited_fds


def test_fd_backed_ram_is_opened_through_proc_self_fd() -> None:
    config = make(memory_backend=MemoryBackend("fd", fd=9, share=True))
    assert props(one(build_command(config), "-object"))["mem-path"] == "/proc/self/fd/9"
    assert config.inherited_fds == (9,)


def test_fd_backend_needs_an_fd_and_others_take_none() -> None:
    with pytest.raises(VMConfigError, match=r"memory_backend\.fd"):
        make(memory_backend=MemoryBackend("fd"))
    with pytest.raises(VMConfigError, match=r"memory_backend\.fd"):
        make(memory_backend=MemoryBackend("memfd", fd=3))


def test_balloon_reports_free_pages() -> None:
    assert devices(build_command(make(balloon=True)), "virtio-balloon-pci") == [
        "virtio-balloon-pci,id=balloon0,free-page-reporting=on"]


def test_microvm_under_tcg_is_handed_the_tsc_rate_it_cannot_calibrate() -> None:
    """microvm has no HPET or PM timer: without the rate the kernel hangs in one boot of four."""
    assert "tsc_early_khz=2596134" in kernel_command_line(
        make(machine="microvm", accel="tcg", tsc_khz=2596134)).split()
    for other in (make(machine="pc", accel="tcg", tsc_khz=2596134),
                  make(machine="microvm", accel="kvm", tsc_khz=2596134),
                  make(machine="microvm", accel="tcg")):
        assert "tsc_early_khz" not in kernel_command_line(other)
    # the caller's own value wins
    assert kernel_command_line(make(machine="microvm", accel="tcg", tsc_khz=1,
                                    kernel_args=("tsc_early_khz=5",))).count("tsc_early_khz") == 1


def test_the_host_tsc_rate_comes_from_cpuinfo() -> None:
    assert host_tsc_khz("processor\t: 0\ncpu MHz\t\t: 2596.134\ncpu MHz : 1.0\n") == 2596134
    assert host_tsc_khz("processor\t: 0\n") is None
    assert host_tsc_khz("cpu MHz\t: unknown\n") is None
    here = host_tsc_khz()  # this host's, whatever it has
    assert here is None or here > 0


def test_the_debug_consoles_port_sits_on_the_agents_device() -> None:
    argv = build_command(make(agent_socket=Path("/run/vm/a.sock"),
                              debug_socket=Path("/run/vm/debug.sock")))
    devices = values(argv, "-device")
    assert "virtserialport,bus=vser0.0,chardev=debug,id=vdbg,name=cocoon.debug" in devices
    assert any(c.startswith("socket,id=debug,path=/run/vm/debug.sock,server=on")
               for c in values(argv, "-chardev"))
    with pytest.raises(VMConfigError):
        make(debug_socket=Path("/run/vm/debug.sock"))  # no agent device to sit on
