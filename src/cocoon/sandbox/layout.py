"""Where one sandbox keeps its files on the host, and the sandbox's own settings.

Everything a VM needs on the host lives in one short directory (unix socket paths are limited
to 107 bytes, and engines use 64-character container ids): `/run/cocoon-vm/<16 hex>/`.
Removing that directory (after unmounting what is under it) removes every trace of the VM.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cocoon.config import current as settings

DEFAULT_VM_ROOT = Path("/run/cocoon-vm")
# SandboxConfig.extra: whether the agent serves the debug console (agent.debug_console when the
# sandbox was made); checked again by `cocoon debug-console`
DEBUG_CONSOLE = "debug_console"


def stdio_socket(directory: Path, index: int, prefix: str = "") -> Path:
    """Where QEMU listens for stdio port `index` (`io<k>.sock`: short, as sun_path must be)."""
    return directory / f"{prefix}io{index}.sock"


def vm_root() -> Path:
    return settings().runtime.vm_dir


def _image() -> str | None:
    image = settings().hypervisor.image
    return str(image) if image else None


def _kernel() -> str | None:
    kernel = settings().hypervisor.kernel
    return str(kernel) if kernel else None


def _kernel_modules() -> str | None:
    modules = settings().hypervisor.kernel_modules
    return str(modules) if modules else None


def vm_dir_for(owner: str, sandbox_id: str) -> Path:
    """A short, stable directory name for a sandbox owned by a state root or a shim."""
    digest = hashlib.sha256(f"{owner}\0{sandbox_id}".encode()).hexdigest()[:16]
    return vm_root() / digest


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def monitor_socket(self) -> Path:
        return self.root / "monitor.sock"

    @property
    def shim_socket(self) -> Path:
        """Per-process shims hand their stdio to the monitor here (runtime.shimwire)."""
        return self.root / "shim.sock"

    @property
    def qemu_dir(self) -> Path:
        """QEMU's own files (its sockets, virtiofsd's, the console log): the one directory
        of the sandbox QEMU's mount namespace holds (`cocoon.hypervisor.jail`); the
        monitor's socket, state and share stay out of its sight."""
        return self.root / "vm"

    @property
    def qmp_socket(self) -> Path:
        return self.qemu_dir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.qemu_dir / "agent.sock"

    def stdio_socket(self, index: int) -> Path:
        """QEMU's socket of the VM's stdio port `index` (cocoon.sandbox.stdioport)."""
        return stdio_socket(self.qemu_dir, index)

    def stdio_sockets(self, count: int) -> tuple[Path, ...]:
        return tuple(self.stdio_socket(k) for k in range(count))

    @property
    def debug_socket(self) -> Path:
        """QEMU's socket of the debug console's port (cocoon.sandbox.debugconsole)."""
        return self.qemu_dir / "debug.sock"

    @property
    def virtiofs_socket(self) -> Path:
        return self.qemu_dir / "vfs.sock"

    @property
    def console_log(self) -> Path:
        return self.qemu_dir / "console.log"

    @property
    def monitor_log(self) -> Path:
        return self.root / "monitor.log"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def pidfile(self) -> Path:
        return self.root / "monitor.pid"

    @property
    def network_record(self) -> Path:
        """The tc redirects the monitor made in the container's network namespace: what to
        remove there when the monitor cannot (it was killed)."""
        return self.root / "network.json"


@dataclass(frozen=True)
class SandboxConfig:
    """What the monitor is asked to run; written as sandbox.json in the sandbox directory."""

    sandbox_id: str
    vm_dir: str
    memory_mib: int = 256
    vcpus: int = field(default_factory=lambda: settings().hypervisor.vcpus)
    # q35 (the default) has empty root ports: interfaces can be hot-plugged after boot
    machine: str = field(default_factory=lambda: settings().hypervisor.machine)
    share: bool = True
    hostname: str = ""
    netns: str | None = None
    # no network namespace at all (`--network host`, `hostNetwork`): the guest reaches out
    # through a user-mode NIC and its listening ports are mirrored on the host's loopback
    host_network: bool = False
    boot_timeout: float = 60.0
    kernel_args: tuple[str, ...] = ()
    asset_dir: str | None = None
    debug: bool = False
    # boot this initrd (with the cached kernel) instead of the agent's image: test variants,
    # hypervisor.image
    initrd: str | None = field(default_factory=lambda: _image())
    # boot this kernel (and take the image's modules from its tree): hypervisor.kernel
    kernel: str | None = field(default_factory=lambda: _kernel())
    kernel_modules: str | None = field(default_factory=lambda: _kernel_modules())
    # the host cgroups (their cgroup.procs files) the monitor enters before it starts anything,
    # so QEMU and virtiofsd are born in them and charged there from their first page
    cgroup_procs: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.vm_dir))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kernel_args"] = list(self.kernel_args)
        data["cgroup_procs"] = list(self.cgroup_procs)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxConfig:
        fields = dict(data)
        fields["kernel_args"] = tuple(fields.get("kernel_args") or ())
        fields["cgroup_procs"] = tuple(fields.get("cgroup_procs") or ())
        return cls(**fields)

    def save(self) -> None:
        tmp = self.layout.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, self.layout.config)

    @classmethod
    def load(cls, path: Path) -> SandboxConfig:
        return cls.from_json(json.loads(path.read_text()))
