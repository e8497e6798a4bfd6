"""The description a VM is started from: one frozen value, validated once when it is made.

Every knob lives in one immutable value so that the command-line builder stays a pure function
and callers (the sandbox monitor, the acceleration probe, templates) derive variants with
`dataclasses.replace`, which validates again. Validation is pure too: nothing here touches the
host; whether files and devices exist is checked when QEMU is started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cocoon.errors import HypervisorError
from cocoon.linux.consolewire import PORT_NAME

Accel = Literal["kvm", "tcg"]
Machine = Literal["pc", "q35", "microvm"]

ACCELS: tuple[Accel, ...] = ("kvm", "tcg")
MACHINES: tuple[Machine, ...] = ("pc", "q35", "microvm")

QBOOT = Path("/usr/share/qemu/qboot.rom")
AGENT_PORT_NAME = "cocoon.agent"
DEBUG_PORT_NAME = PORT_NAME  # cocoon.linux.consolewire: the guest's end reads it there too
# Bulk stdout/stderr: port k is `cocoon.stdio.<k>` on the agent's virtio-serial device, each on
# a unix socket of its own (docs/design.md, "Stdio ports")
STDIO_PORT_PREFIX = "cocoon.stdio."
MAX_STDIO_PORTS = 30  # the device's max_ports is 31 with the agent's port

# Without RDRAND the guest kernel's random pool starts empty and Python's first start blocks
# about 1 s on getrandom(); "host" passes the real CPU through under KVM.
TCG_CPU = "qemu64,+rdrand"
KVM_CPU = "host"
DEFAULT_TB_SIZE_MIB = 32


UNIX_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
VIRTIOFS_TAG_MAX = 36  # the tag field of struct virtio_fs_config
IFNAMSIZ_MAX = 15
MIN_MEMORY_MIB = 64
MAX_VCPUS = 255
MAX_HOTPLUG_PORTS = 32
VSOCK_MIN_CID = 3  # 0-2 are reserved (hypervisor, local, host)
VSOCK_MAX_CID = 0xFFFFFFFE

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class VMConfigError(HypervisorError):
    """A VM description is inconsistent; `evidence["field"]` names the offending field."""

    def __init__(self, field: str, message: str, **evidence: Any) -> None:
        super().__init__(f"invalid VM config: {field}: {message}", field=field, **evidence)
        self.field = field


@dataclass(frozen=True)
class MemoryBackend:
    """Guest RAM backed by a memfd or a file instead of anonymous memory.

    vhost-user devices (virtio-fs) need it shared so virtiofsd can map guest RAM; templates map a
    file shared once (a private mapping of a file, `share=False`, is refused when QEMU runs as
    its own user: see `qemu`). `kind="fd"` is a file the caller already opened (a memfd it
    filled from a template): QEMU inherits `fd` and opens it as /proc/self/fd/<fd>.
    """

    kind: Literal["memfd", "file", "fd"] = "memfd"
    path: Path | None = None
    share: bool = True
    fd: int | None = None

    @property
    def mem_path(self) -> Path | None:
        if self.kind == "fd":
            return Path(f"/proc/self/fd/{self.fd}")
        return self.path


@dataclass(frozen=True)
class VirtioFsShare:
    """One virtio-fs device: the guest mounts `tag`; virtiofsd listens on `socket`."""

    tag: str
    socket: Path
    queue_size: int = 1024


@dataclass(frozen=True)
class NetInterface:
    """One virtio-net device backed by a tap, given either as an open fd or by name, or (with
    `user`) by QEMU's user-mode network stack (slirp: the guest's traffic leaves through QEMU's
    own sockets on the host, with no host interface involved).

    An fd is how a tap made inside the container's network namespace reaches QEMU; the fd is
    inherited by QEMU at start.
    """

    mac: str
    tap_fd: int | None = None
    ifname: str | None = None
    mtu: int | None = None
    vhost: bool = False
    user: bool = False


@dataclass(frozen=True)
class VMConfig:
    """Everything QEMU is started with. See the module docstring for why it is frozen.

    `firmware=None` means qboot on `pc` and `q35` (the fastest path to the kernel) and QEMU's
    own microvm BIOS on `microvm` (which gets a PCIe bus, so devices are virtio-pci on every
    machine type). `cpu_model=None` means `TCG_CPU` or `KVM_CPU` by `accel`.
    `tb_size_mib` applies under TCG only. `kernel_args` are appended to the defaults the
    builder adds (console, quiet, panic), and override them when they set the same key.
    """

    name: str
    kernel: Path
    qmp_socket: Path
    console_log: Path
    initrd: Path | None = None
    kernel_args: tuple[str, ...] = ()
    memory_mib: int = 256
    vcpus: int = 1
    accel: Accel = "tcg"
    cpu_model: str | None = None
    machine: Machine = "pc"
    firmware: Path | None = None
    tb_size_mib: int | None = DEFAULT_TB_SIZE_MIB
    agent_socket: Path | None = None
    # one virtio-serial port per socket, named STDIO_PORT_PREFIX + its index (needs the agent's)
    stdio_sockets: tuple[Path, ...] = ()
    # the debug console's port (`cocoon.debug`, needs the agent's device): always present, so a
    # template and its clones have the same devices; the agent serves it only when enabled
    debug_socket: Path | None = None
    memory_backend: MemoryBackend | None = None
    shares: tuple[VirtioFsShare, ...] = ()
    nics: tuple[NetInterface, ...] = ()
    vsock_cid: int | None = None
    hotplug_ports: int = 0
    pidfile: Path | None = None
    qemu_binary: str = "qemu-system-x86_64"
    # Restore from a saved VM instead of booting: QEMU reads the saved state from this
    # inherited fd (`-incoming defer`, then `migrate-incoming` once QMP is up).
    incoming_fd: int | None = None
    # Saving and restoring leave shared RAM blocks (share=on) out of the stream (the
    # x-ignore-shared capability): what templates and their clones are made with.
    ignore_shared_ram: bool = False
    balloon: bool = False  # virtio-balloon with free page reporting
    # QEMU's seccomp filter (`-sandbox`, see cmdline.SECCOMP_SANDBOX): a QEMU that tries to
    # spawn a process, change its credentials or priority, or use an obsolete call is killed.
    seccomp: bool = True
    # QEMU in a mount namespace of its own that holds only what this VM needs (`jail`); it
    # changes no option of QEMU's, so a template and its clones may differ in it
    own_root: bool = True
    # The guest TSC's rate, given to the kernel (`tsc_early_khz`) on microvm under TCG, where
    # the machine has no clock to calibrate it against (`cocoon.hypervisor.hostclock`);
    # QemuVM fills it from the host when it is None.
    tsc_khz: int | None = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def cpu(self) -> str:
        if self.cpu_model:
            return self.cpu_model
        return KVM_CPU if self.accel == "kvm" else TCG_CPU

    @property
    def firmware_path(self) -> Path | None:
        if self.firmware is not None:
            return self.firmware
        return None if self.machine == "microvm" else QBOOT

    @property
    def inherited_fds(self) -> tuple[int, ...]:
        """Descriptors QEMU must inherit: taps, an fd-backed RAM, the incoming state."""
        fds = [nic.tap_fd for nic in self.nics if nic.tap_fd is not None]
        if self.memory_backend is not None and self.memory_backend.fd is not None:
            fds.append(self.memory_backend.fd)
        if self.incoming_fd is not None:
            fds.append(self.incoming_fd)
        return tuple(fds)

    @property
    def socket_paths(self) -> tuple[Path, ...]:
        """The unix sockets QEMU listens on (QEMU creates them; stale ones must go first)."""
        return tuple(p for p in (self.qmp_socket, self.agent_socket, *self.stdio_sockets,
                                 self.debug_socket) if p is not None)


def validate(config: VMConfig) -> None:
    """Raise `VMConfigError` for the first inconsistency found; pure, no host access."""
    _validate_basics(config)
    _validate_memory(config)
    for index, share in enumerate(config.shares):
        _validate_share(index, share)
    tags = [share.tag for share in config.shares]
    if len(set(tags)) != len(tags):
        raise VMConfigError("shares", "virtio-fs tags must be unique", tags=tags)
    for index, nic in enumerate(config.nics):
        _validate_nic(index, nic)
    macs = [nic.mac for nic in config.nics]
    if len(set(macs)) != len(macs):
        raise VMConfigError("nics", "MAC addresses must be unique", macs=macs)
    if config.vsock_cid is not None and not VSOCK_MIN_CID <= config.vsock_cid <= VSOCK_MAX_CID:
        raise VMConfigError("vsock_cid", f"must be in {VSOCK_MIN_CID}..{VSOCK_MAX_CID}",
                            value=config.vsock_cid)
    if config.hotplug_ports:
        if config.machine != "q35":
            raise VMConfigError("hotplug_ports", "empty PCIe root ports need machine q35",
                                machine=config.machine)
        if not 0 < config.hotplug_ports <= MAX_HOTPLUG_PORTS:
            raise VMConfigError("hotplug_ports", f"must be in 0..{MAX_HOTPLUG_PORTS}",
                                value=config.hotplug_ports)
    elif config.hotplug_ports < 0:
        raise VMConfigError("hotplug_ports", "must not be negative", value=config.hotplug_ports)
    if config.incoming_fd is not None and config.incoming_fd < 0:
        raise VMConfigError("incoming_fd", "must be an open file descriptor",
                            value=config.incoming_fd)


def _validate_basics(config: VMConfig) -> None:
    if not _NAME_RE.match(config.name):
        raise VMConfigError("name", "1-64 characters of [A-Za-z0-9._-], not starting with "
                            "a punctuation mark", value=config.name)
    if config.accel not in ACCELS:
        raise VMConfigError("accel", f"must be one of {', '.join(ACCELS)}", value=config.accel)
    if config.machine not in MACHINES:
        raise VMConfigError("machine", f"must be one of {', '.join(MACHINES)}",
                            value=config.machine)
    if config.memory_mib < MIN_MEMORY_MIB:
        raise VMConfigError("memory_mib", f"at least {MIN_MEMORY_MIB} MiB",
                            value=config.memory_mib)
    if not 1 <= config.vcpus <= MAX_VCPUS:
        raise VMConfigError("vcpus", f"must be in 1..{MAX_VCPUS}", value=config.vcpus)
    if config.tb_size_mib is not None and config.tb_size_mib <= 0:
        raise VMConfigError("tb_size_mib", "must be positive", value=config.tb_size_mib)
    if config.cpu_model is not None and (not config.cpu_model or " " in config.cpu_model):
        raise VMConfigError("cpu_model", "must be a non-empty QEMU -cpu value",
                            value=config.cpu_model)
    for arg in config.kernel_args:
        if not arg or any(ch in arg for ch in "\n\r\0"):
            raise VMConfigError("kernel_args", "each argument must be non-empty, one line",
                                value=arg)
    for field in ("qmp_socket", "agent_socket"):
        path = getattr(config, field)
        if path is not None:
            _check_socket_path(field, path)
    if config.stdio_sockets and config.agent_socket is None:
        raise VMConfigError("stdio_sockets", "stdio ports sit on the agent's device: they need "
                            "agent_socket")
    if len(config.stdio_sockets) > MAX_STDIO_PORTS:
        raise VMConfigError("stdio_sockets", f"at most {MAX_STDIO_PORTS}",
                            value=len(config.stdio_sockets))
    for index, path in enumerate(config.stdio_sockets):
        _check_socket_path(f"stdio_sockets[{index}]", path)
    if config.debug_socket is not None:
        if config.agent_socket is None:
            raise VMConfigError("debug_socket", "the debug port sits on the agent's device: it "
                                "needs agent_socket")
        _check_socket_path("debug_socket", config.debug_socket)


def _validate_memory(config: VMConfig) -> None:
    backend = config.memory_backend
    if backend is not None:
        if backend.kind not in ("memfd", "file", "fd"):
            raise VMConfigError("memory_backend.kind", "must be memfd, file or fd",
                                value=backend.kind)
        if backend.kind == "file" and backend.path is None:
            raise VMConfigError("memory_backend.path", "a file backend needs a path")
        if backend.kind != "file" and backend.path is not None:
            raise VMConfigError("memory_backend.path", f"a {backend.kind} backend takes no path",
                                value=str(backend.path))
        if (backend.kind == "fd") != (backend.fd is not None and backend.fd >= 0):
            raise VMConfigError("memory_backend.fd", "an fd backend needs an open descriptor, "
                                "and only it takes one", value=backend.fd)
    if config.shares and (backend is None or not backend.share):
        raise VMConfigError("memory_backend", "virtio-fs needs guest RAM in a shared memory "
                            "backend (memfd or file with share=True)",
                            shares=[share.tag for share in config.shares])


def _validate_share(index: int, share: VirtioFsShare) -> None:
    field = f"shares[{index}]"
    if not share.tag or len(share.tag.encode()) > VIRTIOFS_TAG_MAX or "," in share.tag:
        raise VMConfigError(f"{field}.tag", f"1-{VIRTIOFS_TAG_MAX} bytes, no comma",
                            value=share.tag)
    if share.queue_size < 1 or share.queue_size & (share.queue_size - 1):
        raise VMConfigError(f"{field}.queue_size", "must be a power of two",
                            value=share.queue_size)
    _check_socket_path(f"{field}.socket", share.socket)


def _validate_nic(index: int, nic: NetInterface) -> None:
    field = f"nics[{index}]"
    if nic.user:
        if nic.tap_fd is not None or nic.ifname is not None or nic.vhost:
            raise VMConfigError(field, "a user-mode NIC has no tap and no vhost",
                                tap_fd=nic.tap_fd, ifname=nic.ifname)
    elif (nic.tap_fd is None) == (nic.ifname is None):
        raise VMConfigError(field, "give exactly one of tap_fd and ifname",
                            tap_fd=nic.tap_fd, ifname=nic.ifname)
    if nic.tap_fd is not None and nic.tap_fd < 0:
        raise VMConfigError(f"{field}.tap_fd", "must be an open file descriptor",
                            value=nic.tap_fd)
    if nic.ifname is not None and not (
            0 < len(nic.ifname) <= IFNAMSIZ_MAX and re.fullmatch(r"[A-Za-z0-9._-]+", nic.ifname)):
        raise VMConfigError(f"{field}.ifname", f"1-{IFNAMSIZ_MAX} characters of "
                            "[A-Za-z0-9._-]", value=nic.ifname)
    if not _MAC_RE.match(nic.mac):
        raise VMConfigError(f"{field}.mac", "six lower-case hex octets separated by colons",
                            value=nic.mac)
    if int(nic.mac[:2], 16) & 1:
        raise VMConfigError(f"{field}.mac", "must be a unicast address", value=nic.mac)
    if nic.mtu is not None and not 68 <= nic.mtu <= 65535:
        raise VMConfigError(f"{field}.mtu", "must be in 68..65535", value=nic.mtu)


def _check_socket_path(field: str, path: Path) -> None:
    if len(bytes(path)) > UNIX_PATH_MAX:
        raise VMConfigError(field, f"unix socket path longer than {UNIX_PATH_MAX} bytes",
                            value=str(path), length=len(bytes(path)))
