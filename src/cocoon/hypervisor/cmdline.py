"""From a `VMConfig` to QEMU's argv: a pure function, so every option is unit-tested without QEMU.

Device ids are fixed (`qmp`, `console`, `vser0`, `agent`, `fs<i>`, `net<i>`, `hp<i>`, `ram`) so
that QMP commands issued later (hot-plug, migration) can name them; stdio port k is chardev
`stdio<k>`, device `vsp<k>`. Backends are `fs<i>`
(chardev) and `net<i>` (netdev); their devices are `vfs<i>` and `nic<i>`, on the command line or,
for a restored VM, hot-plugged into the root ports `hp<k>` (`cocoon.hypervisor.hotplug`).
"""

from __future__ import annotations

from pathlib import Path

from cocoon.hypervisor.config import (
    AGENT_PORT_NAME,
    DEBUG_PORT_NAME,
    STDIO_PORT_PREFIX,
    MemoryBackend,
    NetInterface,
    VirtioFsShare,
    VMConfig,
)

# Added unless the caller's kernel_args set the same key: the console is the first serial port
# (its log is the guest's voice before the agent runs), boot messages stay off the slow emulated
# UART, and a panic reboots at once, which -no-reboot turns into QEMU exiting.
DEFAULT_KERNEL_ARGS: tuple[str, ...] = ("console=ttyS0", "quiet", "panic=-1")

# QEMU's seccomp filter, installed before it opens anything the guest reaches: a call in a
# denied group kills the whole process (SIGSYS). Nothing QEMU needs is in them: taps, the
# RAM of a clone and its state arrive as descriptors (no helper is ever spawned), the warm
# pool renices QEMU from outside, and QEMU never changes its own user (see docs/design.md,
# "Containing a sandbox").
SECCOMP_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def build_command(config: VMConfig) -> list[str]:
    """The complete argv for `config`; no I/O, no defaults taken from the host."""
    argv = [config.qemu_binary, "-name", _escape(config.name)]
    if config.seccomp:
        argv += ["-sandbox", SECCOMP_SANDBOX]
    argv += ["-machine", _machine(config), "-accel", _accel(config), "-cpu", config.cpu]
    argv += ["-m", f"{config.memory_mib}M", "-smp", str(config.vcpus)]
    if config.memory_backend is not None:
        argv += ["-object", _memory_object(config.memory_backend, config.memory_mib)]
    firmware = config.firmware_path
    if firmware is not None:
        argv += ["-bios", str(firmware)]
    argv += ["-kernel", str(config.kernel)]
    if config.initrd is not None:
        argv += ["-initrd", str(config.initrd)]
    argv += ["-append", kernel_command_line(config)]
    argv += ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
    argv += ["-chardev", f"file,id=console,path={_escape(str(config.console_log))},append=on",
             "-serial", "chardev:console"]
    argv += ["-chardev", _server_socket("qmp", config.qmp_socket),
             "-mon", "chardev=qmp,mode=control"]
    argv += _agent_channel(config)
    if config.balloon:
        argv += ["-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"]
    if config.vsock_cid is not None:
        argv += ["-device", f"vhost-vsock-pci,guest-cid={config.vsock_cid}"]
    for index in range(config.hotplug_ports):
        argv += ["-device", f"pcie-root-port,id=hp{index},bus=pcie.0,chassis={index + 1}"]
    for index, share in enumerate(config.shares):
        argv += ["-chardev", f"socket,id=fs{index},path={_escape(str(share.socket))}",
                 "-device", _option(fs_device(index, share))]
    for index, nic in enumerate(config.nics):
        argv += ["-netdev", _netdev(index, nic), "-device", _option(net_device(index, nic))]
    if config.incoming_fd is not None:
        # the state is read from the fd once QMP has set the migration capabilities
        argv += ["-incoming", "defer"]
    if config.pidfile is not None:
        argv += ["-pidfile", str(config.pidfile)]
    return argv


def kernel_command_line(config: VMConfig) -> str:
    """The defaults the caller did not override, then the caller's arguments in order."""
    keys = {_arg_key(arg) for arg in config.kernel_args}
    if "debug" in keys or "loglevel" in keys:
        keys.add("quiet")  # asking for kernel messages means not silencing them
    defaults = [arg for arg in DEFAULT_KERNEL_ARGS if _arg_key(arg) not in keys]
    if (config.machine == "microvm" and config.accel == "tcg" and config.tsc_khz is not None
            and "tsc_early_khz" not in keys):
        defaults.append(f"tsc_early_khz={config.tsc_khz}")  # see cocoon.hypervisor.hostclock
    return " ".join([*defaults, *config.kernel_args])


def _arg_key(arg: str) -> str:
    return arg.split("=", 1)[0]


def _escape(value: str) -> str:
    """QEMU's option parser reads ',,' as a literal comma inside a key=value list."""
    return value.replace(",", ",,")


def _machine(config: VMConfig) -> str:
    options: list[str] = [config.machine]
    if config.machine == "microvm":
        # A PCIe host bridge keeps the guest's drivers identical on every machine type
        # (virtio-pci).
        options.append("pcie=on")
    if config.memory_backend is not None:
        options.append("memory-backend=ram")
    return ",".join(options)


def _accel(config: VMConfig) -> str:
    if config.accel == "tcg" and config.tb_size_mib is not None:
        return f"tcg,tb-size={config.tb_size_mib}"
    return config.accel


def _memory_object(backend: MemoryBackend, memory_mib: int) -> str:
    share = "on" if backend.share else "off"
    if backend.kind in ("file", "fd"):
        return (f"memory-backend-file,id=ram,size={memory_mib}M,"
                f"mem-path={_escape(str(backend.mem_path))},share={share}")
    return f"memory-backend-memfd,id=ram,size={memory_mib}M,share={share}"


def _server_socket(chardev_id: str, path: Path) -> str:
    return f"socket,id={chardev_id},path={_escape(str(path))},server=on,wait=off"


def _agent_channel(config: VMConfig) -> list[str]:
    if config.agent_socket is None:
        return []
    argv = ["-device", "virtio-serial-pci,id=vser0",
            "-chardev", _server_socket("agent", config.agent_socket),
            "-device", f"virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}"]
    for index, path in enumerate(config.stdio_sockets):
        argv += ["-chardev", _server_socket(f"stdio{index}", path),
                 "-device", f"virtserialport,bus=vser0.0,chardev=stdio{index},"
                 f"id=vsp{index},name={STDIO_PORT_PREFIX}{index}"]
    if config.debug_socket is not None:
        argv += ["-chardev", _server_socket("debug", config.debug_socket),
                 "-device", f"virtserialport,bus=vser0.0,chardev=debug,id=vdbg,"
                 f"name={DEBUG_PORT_NAME}"]
    return argv


def user_netdev(index: int) -> dict[str, object]:
    """QEMU's user-mode network (slirp) with its defaults: the guest is 10.0.2.15/24, the
    gateway 10.0.2.2 (which is also the host's loopback), DNS 10.0.2.3; IPv4 only."""
    return {"type": "user", "id": f"net{index}", "ipv6": False}


def _netdev(index: int, nic: NetInterface) -> str:
    if nic.user:
        return f"user,id=net{index},ipv6=off"
    if nic.tap_fd is not None:
        netdev = f"tap,id=net{index},fd={nic.tap_fd}"
    else:
        netdev = f"tap,id=net{index},ifname={nic.ifname},script=no,downscript=no"
    return netdev + (",vhost=on" if nic.vhost else "")


def fs_device(index: int, share: VirtioFsShare) -> dict[str, object]:
    return {"driver": "vhost-user-fs-pci", "id": f"vfs{index}", "chardev": f"fs{index}",
            "tag": share.tag, "queue-size": share.queue_size}


def net_device(index: int, nic: NetInterface) -> dict[str, object]:
    device: dict[str, object] = {"driver": "virtio-net-pci", "id": f"nic{index}",
                                 "netdev": f"net{index}", "mac": nic.mac}
    if nic.mtu is not None:
        device["host_mtu"] = nic.mtu
    return device


def _option(device: dict[str, object]) -> str:
    """A device_add argument dict as a -device option string."""
    rest = [f"{key}={_escape(str(value))}" for key, value in device.items() if key != "driver"]
    return ",".join([str(device["driver"]), *rest])
