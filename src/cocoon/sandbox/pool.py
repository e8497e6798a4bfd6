"""The warm pool (Kata's VM cache): restored clones kept waiting and handed to `create`.

A member is an ordinary sandbox monitor started with `--pool TEMPLATE`: it restores a clone of
that template, warms it up (one throwaway container, so QEMU has translated the code a
container's start runs) and waits, with no share, NIC or container of its own, in its own VM
directory marked with `pool.json`. When ready it lists itself in `<VM root>/.pool/<template>/`.
Whoever starts a sandbox takes a member by unlinking its entry there (an unlink succeeds for
exactly one caller, whatever the number of processes trying) and asks its monitor to become
that sandbox (`cocoon.Monitor/Claim`): the share, NICs and hostname are added then. The caller
that took a member starts new ones in the background, up to `COCOON_POOL_SIZE` per template and
within `COCOON_POOL_MEMORY_MIB` for the whole pool, and never while the host has less than
`MIN_AVAILABLE_MIB` available.

The pool is off unless `COCOON_POOL_SIZE` is set. The OCI CLI and the containerd shim both get
their sandboxes through `launcher.start_sandbox`, which asks the pool first. `cocoon template
rm` stops the members with the templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cocoon.config import current as settings
from cocoon.errors import CocoonError
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout, SandboxConfig, vm_root

logger = logging.getLogger("cocoon.sandbox.pool")

ENV_SIZE = "COCOON_POOL_SIZE"  # pool.size
ENV_MEMORY = "COCOON_POOL_MEMORY_MIB"  # pool.memory_mib
MIN_AVAILABLE_MIB = 1024
MEMBER_OVERHEAD_MIB = 64  # QEMU's own and the monitor's, beside the copy of the template RAM
INDEX = ".pool"
MARKER = "pool.json"
CLAIM_TIMEOUT = 30.0
# Members start and wait at a low CPU priority, so that filling the pool does not slow the
# containers that run meanwhile; a claimed member takes the normal priority back.
MEMBER_NICE = 10


def renice(pids: list[int], value: int = 0) -> None:
    """Set the priority of every thread of `pids` (nice is per thread on Linux)."""
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            with contextlib.suppress(OSError, ValueError):
                os.setpriority(os.PRIO_PROCESS, int(tid), value)


def size(environ: dict[str, str] | None = None) -> int:
    """Members kept ready per template (0: no pool)."""
    return settings(environ).pool.size


def memory_bound_mib(environ: dict[str, str] | None = None) -> int:
    return settings(environ).pool.memory_mib


def index_dir(template: str) -> Path:
    return vm_root() / INDEX / template


@dataclass(frozen=True)
class Member:
    path: Path
    template: str
    cost_mib: int
    ready: bool

    @property
    def layout(self) -> Layout:
        return Layout(self.path)


def _pid_alive(path: Path) -> bool:
    try:
        pid = int(Layout(path).pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def members(template: str | None = None) -> list[Member]:
    """The pool's members (of `template`, or all) whose monitor is alive, ready or starting."""
    root = vm_root()
    found: list[Member] = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        marker = path / MARKER
        if path.name.startswith(".") or not marker.exists():
            continue
        try:
            data = json.loads(marker.read_text())
            name, cost = str(data["template"]), int(data.get("cost_mib", 0))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if template is not None and name != template:
            continue
        if not _pid_alive(path):
            continue
        found.append(Member(path, name, cost, (index_dir(name) / path.name).exists()))
    return found


def is_member(path: Path) -> bool:
    return (path / MARKER).exists()


def mark_ready(layout: Layout, template: str) -> None:
    directory = index_dir(template)
    for _ in range(3):  # `stop` may remove an empty index directory between the two steps
        directory.mkdir(parents=True, exist_ok=True)
        try:
            (directory / layout.root.name).touch()
            return
        except FileNotFoundError:
            continue


def unmark(layout: Layout, template: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (index_dir(template) / layout.root.name).unlink()


def take(template: str) -> Path | None:
    """Take one ready member of `template` (the oldest), or None; atomic between processes."""
    directory = index_dir(template)
    try:
        entries = sorted(directory.iterdir(), key=lambda e: e.stat().st_mtime)
    except (FileNotFoundError, OSError):
        return None
    for entry in entries:
        try:
            entry.unlink()
        except FileNotFoundError:
            continue  # someone else took it
        return vm_root() / entry.name
    return None


async def claim(config: SandboxConfig, template: str,
                on_vm_dir: Callable[[Path], None] | None = None
                ) -> tuple[SandboxConfig, dict[str, Any]] | None:
    """A pooled clone of `template` made into the sandbox `config` asks for (its VM directory
    becomes the member's); None when the pool has none. A member that fails is stopped and the
    next one tried. `on_vm_dir` hears of a member's directory once it is taken, before it is
    asked to become the sandbox (the caller records it: killed during the claim, it leaves the
    sandbox where its `delete` finds it)."""
    from cocoon.sandbox.launcher import stop_sandbox_async

    while (path := take(template)) is not None:
        layout = Layout(path)
        claimed = replace(config, vm_dir=str(path))
        try:
            if on_vm_dir is not None:
                on_vm_dir(path)
        except BaseException:
            await stop_sandbox_async(layout, grace=0)  # taken, and no one's
            raise
        try:
            client = await SandboxClient.connect(layout.monitor_socket, timeout=5.0)
            try:
                info = await client.claim(json.dumps(claimed.to_json()),
                                          timeout=CLAIM_TIMEOUT + config.boot_timeout)
            finally:
                await client.close()
        except (CocoonError, OSError) as err:
            logger.warning("pool member %s could not be claimed: %s", path.name, err)
            await stop_sandbox_async(layout, grace=0)
            continue
        return claimed, info
    return None


def _mem_available_mib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) >> 10
    except OSError:
        pass
    return 0


def refill(template: str, shape: SandboxConfig, cost_mib: int,
           environ: dict[str, str] | None = None) -> int:
    """Start members of `template` (detached, not waited for) until the pool holds `size()`
    of them, within the memory bounds; returns how many were started."""
    from cocoon.sandbox.launcher import spawn_monitor

    want = size(environ)
    if want <= 0:
        return 0
    current = members()
    mine = [m for m in current if m.template == template]
    held = sum(m.cost_mib for m in current)
    bound = memory_bound_mib(environ)
    started = 0
    for _ in range(want - len(mine)):
        if held + cost_mib > bound:
            logger.info("pool: not starting a member of %s: the pool would hold %d MiB, over "
                        "pool.memory_mib (%s) %d", template, held + cost_mib,
                        settings().source("pool.memory_mib"), bound)
            break
        if _mem_available_mib() - cost_mib < MIN_AVAILABLE_MIB:
            logger.info("pool: not starting a member of %s: the host has %d MiB available",
                        template, _mem_available_mib())
            break
        name = secrets.token_hex(8)
        path = vm_root() / name
        path.mkdir(parents=True, mode=0o700)
        (path / MARKER).write_text(json.dumps({"template": template, "cost_mib": cost_mib}))
        # a member is no container's yet: it stays in the runtime's cgroup until it is claimed
        config = replace(shape, sandbox_id=f"pool-{name}", vm_dir=str(path), hostname="",
                         netns=None, host_network=False, share=True,
                         cgroup_procs=())
        try:
            spawn_monitor(config, pool=template, nice=MEMBER_NICE)
        except OSError as err:
            logger.warning("pool: cannot start a member: %s", err)
            break
        held += cost_mib
        started += 1
    return started


async def stop(template_names: set[str] | None = None) -> list[str]:
    """Stop the members (of the named templates, or all); returns their directory names."""
    from cocoon.sandbox.launcher import stop_sandbox_async

    stopped = []
    for member in members():
        if template_names is not None and member.template not in template_names:
            continue
        unmark(member.layout, member.template)
        await stop_sandbox_async(member.layout, grace=0)
        stopped.append(member.path.name)
    _remove_empty_index()
    return stopped


def _remove_empty_index() -> None:
    """The index directories that list nobody (a member starting meanwhile makes its own)."""
    base = vm_root() / INDEX
    if not base.is_dir():
        return
    for directory in base.iterdir():
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        base.rmdir()


def stop_sync(template_names: set[str] | None = None) -> list[str]:
    return asyncio.run(stop(template_names))


# --- what `launcher.start_sandbox` asks of the pool -------------------------------------------


def _template_for(config: SandboxConfig) -> tuple[str, int] | None:
    """The name of the template `config`'s sandbox would be cloned from, and what a member of
    it costs; None when it would not start from a template (or there is none yet)."""
    from cocoon.hypervisor import accel
    from cocoon.runtime import sizing
    from cocoon.sandbox import vmstart
    from cocoon.template import policy, store

    decision = asyncio.run(accel.choose_accel_async(
        cache_dir=Path(config.asset_dir) if config.asset_dir else None))
    boot = vmstart.guest_boot(config, decision)
    choice = policy.decide(accel=decision.accel, memory_mib=config.memory_mib,
                           default_mib=sizing.default_memory_mib(), custom_initrd=boot.custom,
                           machine=config.machine,
                           known_image=boot.image_digest is not None)
    if not choice.use:
        return None
    spec = vmstart.template_spec(config, boot)
    try:
        template = store.find(boot.cache, spec)
    except CocoonError:
        return None
    if template is None:
        return None
    data_mib = int(template.meta.get("ram_allocated_bytes", 0)) >> 20
    return template.name, data_mib + MEMBER_OVERHEAD_MIB


def start_from_pool(config: SandboxConfig, on_vm_dir: Callable[[Path], None] | None = None
                    ) -> tuple[SandboxConfig, dict[str, Any]] | None:
    """`config`'s sandbox from a pooled clone, with the pool refilled behind it; None when the
    pool has none for it (the caller starts one the usual way)."""
    found = _template_for(config)
    if found is None:
        return None
    template, cost = found
    claimed = asyncio.run(claim(config, template, on_vm_dir))
    refill(template, config, cost)
    return claimed


def refill_for(config: SandboxConfig) -> None:
    """After a sandbox started without the pool: fill the pool for the next ones."""
    try:
        found = _template_for(config)
    except CocoonError as err:
        logger.info("pool: not refilled: %s", err)
        return
    if found is not None:
        refill(found[0], config, found[1])
