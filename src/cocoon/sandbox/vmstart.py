"""What a sandbox's VM starts from: a clone of a template when one fits, a cold boot otherwise.

The monitor asks `guest_boot` for the guest (kernel, image, accelerator), `obtain_template` for
a template (finding it, checking it, building it on first use under its lock), and the two
`*_config` functions for the QEMU it starts. Every reason to boot cold is logged (debug level
when it is the policy, a warning when a template was there but damaged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cocoon.config import current as settings
from cocoon.errors import CocoonError, TemplateError
from cocoon.guest import assets
from cocoon.guest.cache import read_json, resolve_cache_dir
from cocoon.guest.kernel import Kernel
from cocoon.hypervisor import accel as accel_mod
from cocoon.hypervisor.config import (
    MemoryBackend,
    NetInterface,
    VirtioFsShare,
    VMConfig,
)
from cocoon.sandbox.layout import Layout, SandboxConfig
from cocoon.template import build, policy, store
from cocoon.template.policy import TEMPLATE_MACHINE
from cocoon.template.spec import HOTPLUG_PORTS, STDIO_PORTS, TemplateSpec

logger = logging.getLogger("cocoon.sandbox.vmstart")

BUILD_LOCK_TIMEOUT = 300.0


@dataclass(frozen=True)
class GuestBoot:
    kernel: Kernel
    initrd: Path
    image_digest: str | None  # None: an initrd of unknown make, never templated
    decision: accel_mod.AccelDecision
    cache: Path
    custom: bool = False  # an initrd other than the agent's current image (test variants)


def guest_boot(config: SandboxConfig, decision: accel_mod.AccelDecision) -> GuestBoot:
    """The kernel and initrd to boot: the agent's image, or the configured variant (blocking:
    may build assets on first use)."""
    cache = resolve_cache_dir(Path(config.asset_dir) if config.asset_dir else None)
    custom = None
    if config.kernel:
        custom = assets.custom_kernel(
            Path(config.kernel), Path(config.kernel_modules) if config.kernel_modules else None)
    if config.initrd:
        kernel = custom or assets.find_kernel(cache) or assets.ensure_kernel(cache)
        return GuestBoot(kernel, Path(config.initrd), _image_digest(Path(config.initrd)),
                         decision, cache, custom=True)
    image = assets.find_guest_image(cache, kernel=custom) or \
        assets.ensure_guest_image(cache, kernel=custom)
    return GuestBoot(image.kernel, image.initrd, image.digest, decision, cache)


def _image_digest(initrd: Path) -> str | None:
    """The digest of a guest image variant the asset builder made (its manifest beside it)."""
    manifest = read_json(initrd.parent / "manifest.json")
    if isinstance(manifest, dict) and isinstance(manifest.get("digest"), str):
        return str(manifest["digest"])
    return None


def tb_size_mib() -> int:
    """TCG's translation buffer per VM, in MiB (`hypervisor.tcg_tb_mib`): QEMU fills it with
    the guest code it translates and keeps it resident, so it is a large part of what an idle
    sandbox costs under TCG; a smaller one means more retranslation while the guest works."""
    return settings().hypervisor.tcg_tb_mib


def kernel_args(config: SandboxConfig) -> tuple[str, ...]:
    args = list(config.kernel_args)
    level = "DEBUG" if config.debug else settings().agent.log_level.upper()
    if level != "INFO":  # the agent's default: the kernel command line (and template) as before
        args.append(f"COCOON_AGENT_LOG={level}")
    return tuple(args)


def template_spec(config: SandboxConfig, boot: GuestBoot) -> TemplateSpec:
    return TemplateSpec(
        kernel=str(boot.kernel.vmlinuz),
        kernel_id=f"{boot.kernel.release} {boot.kernel.package_version}",
        initrd=str(boot.initrd), image_digest=boot.image_digest or "",
        memory_mib=config.memory_mib, vcpus=config.vcpus, machine=TEMPLATE_MACHINE,
        accel=boot.decision.accel, cpu_model=boot.decision.cpu_model,
        kernel_args=kernel_args(config), qemu_version=accel_mod.qemu_version(),
        tb_size_mib=tb_size_mib() if boot.decision.accel == "tcg" else None,
        hotplug_ports=HOTPLUG_PORTS, stdio_ports=STDIO_PORTS)


async def obtain_template(config: SandboxConfig, boot: GuestBoot, work: Path,
                          default_memory_mib: int) -> store.Template | None:
    """The template to clone for this sandbox, built now if it should be and is missing; None
    (with the reason logged) to boot cold."""
    choice = policy.decide(accel=boot.decision.accel, memory_mib=config.memory_mib,
                           default_mib=default_memory_mib, custom_initrd=boot.custom,
                           machine=config.machine,
                           known_image=boot.image_digest is not None)
    if not choice.use:
        logger.debug("sandbox %s boots cold: %s", config.sandbox_id, choice.reason)
        return None
    spec = template_spec(config, boot)
    try:
        found = store.find(boot.cache, spec)
        if found is None and choice.build:
            async with store.locked(boot.cache, spec.name, BUILD_LOCK_TIMEOUT):
                found = store.find(boot.cache, spec)  # another process may have built it
                if found is None:
                    found = await _build(config, spec, boot, work, choice.reason)
    except TemplateError as err:
        # damaged or stale: never cloned; this sandbox boots cold, the next one builds anew
        logger.warning("sandbox %s boots cold: %s (removed; it is built again on next use)",
                       config.sandbox_id, err)
        store.remove(store.template_dir(boot.cache, spec))
        return None
    if found is None:
        logger.debug("sandbox %s boots cold: no template %s; %s", config.sandbox_id,
                      spec.name, choice.reason)
    return found


async def _build(config: SandboxConfig, spec: TemplateSpec, boot: GuestBoot, work: Path,
                 reason: str) -> store.Template | None:
    logger.info("sandbox %s: building template %s (%s)", config.sandbox_id, spec.name, reason)
    try:
        return await build.build(spec, boot.cache, work, boot_timeout=config.boot_timeout)
    except TemplateError:
        raise
    except (CocoonError, OSError) as err:
        logger.warning("sandbox %s boots cold: building template %s failed: %s",
                       config.sandbox_id, spec.name, err)
        return None


def cold_config(config: SandboxConfig, boot: GuestBoot, *, shares: tuple[VirtioFsShare, ...],
                nics: tuple[NetInterface, ...]) -> VMConfig:
    """A VM that boots the kernel, with its shares and NICs from the start."""
    layout = config.layout
    return VMConfig(
        name=f"cocoon-{layout.root.name}", kernel=boot.kernel.vmlinuz, initrd=boot.initrd,
        kernel_args=kernel_args(config), qmp_socket=layout.qmp_socket,
        console_log=layout.console_log, memory_mib=config.memory_mib, vcpus=config.vcpus,
        accel=boot.decision.accel, cpu_model=boot.decision.cpu_model,
        machine=config.machine,  # type: ignore[arg-type]
        hotplug_ports=HOTPLUG_PORTS if config.machine == "q35" else 0,
        tb_size_mib=tb_size_mib(), agent_socket=layout.agent_socket,
        stdio_sockets=layout.stdio_sockets(STDIO_PORTS), debug_socket=layout.debug_socket,
        balloon=True,
        memory_backend=MemoryBackend("memfd", share=True) if shares else None,
        shares=shares, nics=nics)


def clone_config(layout: Layout, template: store.Template, *, memory: MemoryBackend,
                 state_fd: int) -> VMConfig:
    """A VM restored from `template`: its devices exactly, its RAM as `memory`."""
    return build.vm_config(template.spec, name=f"cocoon-{layout.root.name}",
                           qmp_socket=layout.qmp_socket, agent_socket=layout.agent_socket,
                           stdio_sockets=layout.stdio_sockets(template.spec.stdio_ports),
                           debug_socket=layout.debug_socket,
                           console_log=layout.console_log, memory=memory,
                           incoming_fd=state_fd)
