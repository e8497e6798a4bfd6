"""Every setting of /etc/cocoon/config.toml, in one place: section, key, type, default, the
environment variable that overrides it, a one-line help and the check its value must pass.

A section is a frozen dataclass whose fields are its settings (`setting()` keeps the rest in the
field's metadata), so code reads typed values (`settings.hypervisor.memory_mib`) and the
loader, `cocoon env` and the reference in docs/operations.md all walk the same definitions.
This module imports nothing heavy: `cocoon state` reads the state root through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cocoon.config.kinds import AbsPath, Bool, Choice, Int, IntList, Kind

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")
MIB_MAX = 1 << 20  # 1 TiB of guest memory: more than any host here has


@dataclass(frozen=True)
class Meta:
    kind: Kind
    help: str
    env: str | None = None


def setting(default: T, kind: Kind, help: str, env: str | None = None) -> T:
    """A section's field: its default, and what the loader and the reference need to know."""
    return field(default=default, metadata={"setting": Meta(kind, help, env)})


@dataclass(frozen=True)
class Hypervisor:
    """The VM each container or pod runs in."""

    memory_mib: int = setting(
        256, Int(64, MIB_MAX), "guest memory of a VM whose container sets no memory limit "
        "(a limit gets the limit plus 128 MiB)", env="COCOON_VM_MEMORY_MIB")
    vcpus: int = setting(1, Int(1, 64), "virtual CPUs of each VM")
    machine: str = setting(
        "q35", Choice(("pc", "q35", "microvm")), "QEMU machine type; templates are q35 VMs, "
        "so another machine boots every VM cold")
    image: Path | None = setting(
        None, AbsPath(optional=True), "an initrd to boot instead of the agent's guest image "
        "(with the kernel below, or the cached one); such a VM is templated only with "
        "templates.mode = on")
    kernel: Path | None = setting(
        None, AbsPath(optional=True), "a kernel (bzImage) to boot instead of Debian's cloud "
        "kernel; the agent's image is built for it (kernel_modules), its VMs templated apart")
    kernel_modules: Path | None = setting(
        None, AbsPath(optional=True), "that kernel's module tree (its lib/modules/<release>, "
        "indexed by depmod): the image takes the drivers the guest needs from it, and a "
        "container loads the rest on demand; without it they must be built in")
    accel: str = setting(
        "auto", Choice(("auto", "kvm", "tcg")), "acceleration: auto (KVM when a probe VM "
        "really boots under it, else TCG), or forced", env="COCOON_ACCEL")
    tcg_tb_mib: int = setting(
        32, Int(1, 2048), "TCG's translation buffer per VM in MiB (resident: a large part of "
        "an idle VM's cost under TCG)", env="COCOON_TCG_TB_MIB")


@dataclass(frozen=True)
class Templates:
    """VM templates: sandboxes start as clones of a saved VM (docs/templates.md)."""

    mode: str = setting(
        "auto", Choice(("auto", "on", "off"), aliases=(
            ("1", "on"), ("true", "on"), ("yes", "on"), ("0", "off"), ("false", "off"),
            ("no", "off"))),
        "auto: templates under TCG only; on: under KVM too; off: every VM boots cold",
        env="COCOON_TEMPLATES")
    memory_mib: tuple[int, ...] = setting(
        (), IntList(64, MIB_MAX), "VM sizes whose template is built on first use (empty: "
        "hypervisor.memory_mib); other sizes use one `cocoon template build` made",
        env="COCOON_TEMPLATE_MEMORY")


@dataclass(frozen=True)
class Pool:
    """The warm pool: restored clones waiting for containers."""

    size: int = setting(0, Int(0, 64), "clones kept ready per template (0: no pool)",
                        env="COCOON_POOL_SIZE")
    memory_mib: int = setting(2048, Int(0, MIB_MAX), "the most memory the pool's waiting "
                              "clones may hold together", env="COCOON_POOL_MEMORY_MIB")


@dataclass(frozen=True)
class Agent:
    """The agent, PID 1 of each guest."""

    log_level: str = setting(
        "info", Choice(LOG_LEVELS), "the agent's log level (its log goes to the VM's console "
        "log); `--debug` makes it debug", env="COCOON_AGENT_LOG")
    debug_console: bool = setting(
        False, Bool(), "serve `cocoon debug-console`: a shell in the guest outside the "
        "containers, for sandboxes started while this is on; every session is logged")


@dataclass(frozen=True)
class Runtime:
    """Where Cocoon keeps things on the host, and how its processes log."""

    state_root: Path = setting(
        Path("/run/cocoon"), AbsPath(), "the CLI's state directory (`--root` overrides it)",
        env="COCOON_ROOT")
    vm_dir: Path = setting(Path("/run/cocoon-vm"), AbsPath(),
                           "one directory per VM (its sockets, share, logs)", env="COCOON_VM_DIR")
    asset_dir: Path = setting(Path("/var/lib/cocoon"), AbsPath(),
                              "guest kernel, images and the acceleration probe's cache",
                              env="COCOON_ASSET_DIR")
    template_dir: Path | None = setting(
        None, AbsPath(optional=True), 'VM templates ("": <asset_dir>/templates)',
        env="COCOON_TEMPLATE_DIR")
    log_level: str = setting(
        "warning", Choice(LOG_LEVELS), "the CLI's log level (`--debug` makes it debug)",
        env="COCOON_LOG_LEVEL")
    log_format: str = setting("text", Choice(("text", "json")),
                              "the CLI's log format (`--log-format` overrides it)",
                              env="COCOON_LOG_FORMAT")
    log_file: Path | None = setting(
        None, AbsPath(optional=True), 'the CLI\'s log file ("": stderr; `--log` overrides it)',
        env="COCOON_LOG_FILE")
    shim_log: Path | None = setting(
        None, AbsPath(optional=True), 'also log shims here, kept after teardown ("": the '
        "per-process shim logs in its VM directory, the containerd shim to containerd only)",
        env="COCOON_SHIM_LOG")
    shim_socket_dir: Path = setting(
        Path("/run/containerd/s"), AbsPath(), "where containerd-shim-cocoon-v2 listens",
        env="COCOON_SHIM_SOCKET_DIR")
    stdio_ports: bool = setting(
        True, Bool(), "bulk stdin, stdout and stderr of processes without a terminal through "
        "the VM's stdio ports (false: all through WriteStdin and ReadStdout, as before)",
        env="COCOON_STDIO_PORTS")


@dataclass(frozen=True)
class Share:
    """virtiofsd, which serves each container's rootfs and volumes to its guest."""

    cache: str = setting(
        "auto", Choice(("auto", "always", "none")), "auto: the guest sees a host change "
        "within a second; always: trusts its cache for good; none: caches nothing",
        env="COCOON_VIRTIOFS_CACHE")
    threads: int = setting(0, Int(0, 64), "request threads (0: on the queue's own thread)",
                           env="COCOON_VIRTIOFS_THREADS")
    writeback: bool = setting(False, Bool(), "let the guest's page cache absorb writes",
                              env="COCOON_VIRTIOFS_WRITEBACK")


SECTIONS: dict[str, type[Any]] = {
    "hypervisor": Hypervisor, "templates": Templates, "pool": Pool, "agent": Agent,
    "runtime": Runtime, "share": Share,
}


@dataclass(frozen=True)
class Definition:
    """One setting, as the loader and the reference see it."""

    section: str
    key: str
    default: Any
    meta: Meta

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


def definitions() -> Iterator[Definition]:
    for section, cls in SECTIONS.items():
        for item in dataclasses.fields(cls):
            yield Definition(section, item.name, item.default, item.metadata["setting"])


def keys(section: str) -> tuple[str, ...]:
    return tuple(item.name for item in dataclasses.fields(SECTIONS[section]))
