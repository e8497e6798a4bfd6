"""Building a template: boot a guest, let the agent settle and trim, save it, dig holes.

The template VM has the clone's device set minus what is hot-plugged later (shares and NICs,
for which it has empty root ports), and its RAM in a file mapped shared, so the saved RAM is
that file and the migration stream holds only the device state. Its sockets live in a work
directory the caller owns (short paths, removed with it); its files in a temporary directory
beside the destination, renamed into place only when whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from cocoon import __version__
from cocoon.errors import CocoonError, TemplateError
from cocoon.hypervisor.config import MemoryBackend, VMConfig
from cocoon.hypervisor.qemu import QemuVM
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.layout import stdio_socket
from cocoon.template import store
from cocoon.template.spec import TemplateSpec

logger = logging.getLogger("cocoon.template.build")

BOOT_TIMEOUT = 120.0
KEEP_FREE = 16 << 20


def vm_config(spec: TemplateSpec, *, name: str, qmp_socket: Path, agent_socket: Path,
              stdio_sockets: tuple[Path, ...], debug_socket: Path, console_log: Path,
              memory: MemoryBackend, **extra: Any) -> VMConfig:
    """The VM a template is (or a clone of it is) started as; `extra` adds the clone's parts.
    `stdio_sockets` (at least `spec.stdio_ports` of them) may differ between a template and
    its clones: the devices are the same, only QEMU's end on the host moves."""
    return VMConfig(
        name=name, kernel=spec.kernel_path, initrd=spec.initrd_path,
        kernel_args=spec.kernel_args, qmp_socket=qmp_socket, console_log=console_log,
        memory_mib=spec.memory_mib, vcpus=spec.vcpus, accel=spec.accel,  # type: ignore[arg-type]
        cpu_model=spec.cpu_model, machine=spec.machine,  # type: ignore[arg-type]
        tb_size_mib=spec.tb_size_mib, agent_socket=agent_socket,
        stdio_sockets=stdio_sockets[:spec.stdio_ports],
        debug_socket=debug_socket if spec.debug_port else None, memory_backend=memory,
        hotplug_ports=spec.hotplug_ports, balloon=spec.balloon, ignore_shared_ram=True,
        **extra)


async def wait_for_agent(socket: Path, vm: QemuVM, timeout: float) -> AgentClient:
    """A client of the agent's own socket (a template VM has no monitor) whose health call the
    agent answered."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not vm.running:
            break
        try:
            client = await AgentClient.connect(socket, timeout=2.0)
        except (CocoonError, OSError) as err:
            last = err
            await asyncio.sleep(0.02)
            continue
        try:
            await client.health(timeout=1.0)
            return client
        except (CocoonError, OSError) as err:
            last = err
            await client.close()
    tail = " | ".join(vm.console_tail(3))
    raise TemplateError(f"the template VM's agent did not answer within {timeout:.0f} s "
                        f"({last!r}; console: {tail})")


def dig_holes(path: Path) -> None:
    """Turn the RAM file's zero pages into holes (util-linux `fallocate --dig-holes`)."""
    try:
        subprocess.run(["fallocate", "--dig-holes", str(path)], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("cannot dig holes in %s: %s", path, err)


def reclaim(tmp: Path) -> None:
    """The template QEMU's user owned its RAM file and console log while it ran (as
    descriptors, so it could change their content and mode, not what the names point to):
    they become the builder's again, and nobody else may write what clones start from."""
    for name, mode in ((store.RAM, 0o600), (store.CONSOLE, 0o640)):
        path = tmp / name
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, os.geteuid(), os.getegid(), follow_symlinks=False)
            os.chmod(path, mode, follow_symlinks=False)


async def build(spec: TemplateSpec, cache: Path, work: Path,
                boot_timeout: float = BOOT_TIMEOUT) -> store.Template:
    """Build `spec`'s template (call with its lock held); returns it checked."""
    started = time.monotonic()
    dest = store.template_dir(cache, spec)
    store.remove_stale_builds(cache, spec.name)
    tmp = dest.parent / f"{store.TMP_PREFIX}{spec.name}-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        meta = await _boot_and_save(spec, tmp, work, boot_timeout)
        reclaim(tmp)
        dig_holes(tmp / store.RAM)
        ram = (tmp / store.RAM).stat()
        meta.update(
            digest=spec.digest, spec=spec.to_json(), cocoon_version=__version__,
            built_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 3),
            ram_bytes=ram.st_size, ram_allocated_bytes=ram.st_blocks * 512,
            state_bytes=(tmp / store.STATE).stat().st_size,
            state_sha256=store.sha256_file(tmp / store.STATE))
        (tmp / store.META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            store.remove(dest)
        os.rename(tmp, dest)
    except BaseException:
        store.remove(tmp)
        raise
    logger.info("template %s built in %.2f s (%d MiB of RAM data)", spec.name,
                meta["build_seconds"], meta["ram_allocated_bytes"] >> 20)
    pruned = store.prune(cache, spec)
    if pruned:
        logger.info("removed superseded templates: %s", ", ".join(pruned))
    return store.check(dest, spec)


async def _boot_and_save(spec: TemplateSpec, tmp: Path, work: Path,
                         boot_timeout: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    agent_socket = work / "tpl-agent.sock"
    config = vm_config(spec, name=f"cocoon-template-{spec.name}",
                       qmp_socket=work / "tpl-qmp.sock", agent_socket=agent_socket,
                       stdio_sockets=tuple(stdio_socket(work, k, "tpl-")
                                           for k in range(spec.stdio_ports)),
                       debug_socket=work / "tpl-debug.sock",
                       console_log=tmp / store.CONSOLE,
                       memory=MemoryBackend("file", tmp / store.RAM, share=True))
    vm = QemuVM(config)
    await vm.start()
    try:
        client = await wait_for_agent(agent_socket, vm, boot_timeout)
        try:
            vm.mark("agent ready")
            # no GetGuestDetails: reading the kernel's boot id would fix it for every clone
            warm_up = await client.warm_up()
            vm.mark("warmed up")
            trim = await client.trim_memory(KEEP_FREE)
            vm.mark("trimmed")
        finally:
            await client.close()
        fd = os.open(tmp / store.STATE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o600)
        try:
            await vm.save(fd)
        finally:
            os.close(fd)
    finally:
        await vm.stop()
    return {"warm_up_seconds": round(warm_up, 3),
            "trim": {"mem_free_bytes": trim.mem_free_bytes, "zeroed_bytes": trim.zeroed_bytes,
                     "seconds": round(trim.seconds, 3)},
            "phases": {k: round(v, 3) for k, v in vm.phases.items()}}
