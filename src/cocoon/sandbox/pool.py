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

When there is no template to clone yet (the first sandbox's build failed, say on a slow host,
and it booted cold), the refill starts members "pending" (`--pool *`): each obtains the template
as any sandbox does (building it under its lock, or waiting for the build that holds the lock)
and then becomes a member of it, so the pool fills once the template exists instead of staying
empty until some later sandbox happens to find one. A member whose monitor died (killed, or
crashed) is reaped by the next refill or `stop`: its QEMU and virtiofsd killed, its directory
and index entry removed.

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
import time
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
PENDING = "*"  # a member still obtaining its template (its marker names it once it knows)
SPAWN_GRACE = 30.0  # seconds a member's directory may be without a monitor while it is spawned
CLAIM_TIMEOUT = 30.0
# Members start and wait at a low CPU priority, so that filling the pool does not slow the
# containers that run meanwhile; a claimed member takes the normal priority back.
MEMBER_NICE = 10
BUILD_BOOT_TIMEOUT = 300.0  # a pending member's template build, in the background at nice 10


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


def _monitor_alive(path: Path) -> bool:
    """The member's monitor is alive (its pid still a process naming its directory)."""
    from cocoon.sandbox.launcher import monitor_pid

    return monitor_pid(Layout(path)) is not None


def _marked() -> list[tuple[Path, str, int]]:
    """Every directory marked as a member: (path, template, cost in MiB)."""
    root = vm_root()
    found: list[tuple[Path, str, int]] = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        marker = path / MARKER
        if path.name.startswith(".") or not marker.exists():
            continue
        try:
            data = json.loads(marker.read_text())
            found.append((path, str(data["template"]), int(data.get("cost_mib", 0))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def members(template: str | None = None) -> list[Member]:
    """The pool's members (of `template`, or all) whose monitor is alive, ready or starting
    (a pending member's template is `PENDING`)."""
    return [Member(path, name, cost, (index_dir(name) / path.name).exists())
            for path, name, cost in _marked()
            if (template is None or name == template) and _monitor_alive(path)]


def reap() -> list[str]:
    """Members whose monitor died (SIGKILLed while it started or waited): what still runs for
    them (QEMU, virtiofsd) is killed, their directory and index entry removed. A directory
    whose monitor is still being spawned (no pid file yet, marked moments ago) is left."""
    from cocoon.sandbox.launcher import sweep

    reaped = []
    for path, name, _ in _marked():
        layout = Layout(path)
        if _monitor_alive(path):
            continue
        if not layout.pidfile.exists():
            try:
                age = time.time() - (path / MARKER).stat().st_mtime
            except OSError:
                continue
            if age < SPAWN_GRACE:
                continue
        # info, not warning: this is housekeeping by whichever command refills, not news
        # about that command (its stderr is one line)
        logger.info("pool: member %s of template %s died; removing what is left of it",
                    path.name, name)
        unmark(layout, name)
        sweep(path)
        reaped.append(path.name)
    return reaped


def set_template(layout: Layout, template: str, cost_mib: int) -> None:
    """A pending member names the template it obtained (its marker rewritten whole)."""
    tmp = layout.root / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"template": template, "cost_mib": cost_mib}))
    os.replace(tmp, layout.root / MARKER)


def cost_of(meta: dict[str, Any]) -> int:
    """What a member of the template with `meta` holds: its RAM data plus its own."""
    return (int(meta.get("ram_allocated_bytes", 0)) >> 20) + MEMBER_OVERHEAD_MIB


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
    reap()
    current = members()
    # a pending member becomes one of whatever template sandboxes use then: this one's
    mine = [m for m in current if m.template in (template, PENDING)]
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
        if template == PENDING:  # it may build the template: no one waits for it
            config = replace(config, boot_timeout=max(config.boot_timeout, BUILD_BOOT_TIMEOUT))
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

    reap()
    stopped = []
    for member in members():
        # a pending member is stopped with any template: it may be building the one removed
        if template_names is not None and member.template not in template_names \
                and member.template != PENDING:
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
    it costs; None when it would not start from a template (or there is none yet: the name
    is then `PENDING` when a sandbox would build it, with what a member may cost at most)."""
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
        template = None  # damaged: the next sandbox (or a pending member) builds it anew
    if template is None:
        return (PENDING, config.memory_mib + MEMBER_OVERHEAD_MIB) if choice.build else None
    return template.name, cost_of(template.meta)


def start_from_pool(config: SandboxConfig, on_vm_dir: Callable[[Path], None] | None = None
                    ) -> tuple[SandboxConfig, dict[str, Any]] | None:
    """`config`'s sandbox from a pooled clone, with the pool refilled behind it; None when the
    pool has none for it (the caller starts one the usual way)."""
    found = _template_for(config)
    if found is None or found[0] == PENDING:
        return None
    template, cost = found
    claimed = asyncio.run(claim(config, template, on_vm_dir))
    refill(template, config, cost)
    return claimed


MEMBER_RETRIES = 2  # replacements started in a row for members that failed to start
ATTEMPT = "pool_attempt"  # SandboxConfig.extra: how many members failed before this one


def replacement(layout: Layout, config: SandboxConfig) -> Callable[[], int] | None:
    """For a member that failed to start (a clone's agent too slow on a loaded host): what
    starts another in its place, at most MEMBER_RETRIES times in a row; None when that budget
    is spent or the member's marker is unreadable. Read before the member's directory goes."""
    attempt = int(config.extra.get(ATTEMPT, 0))
    if attempt >= MEMBER_RETRIES:
        return None
    try:
        marker = json.loads((layout.root / MARKER).read_text())
        template, cost = str(marker["template"]), int(marker["cost_mib"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    shape = replace(config, extra={**config.extra, ATTEMPT: attempt + 1})
    return lambda: refill(template, shape, cost)


def refill_for(config: SandboxConfig) -> None:
    """After a sandbox started without the pool: fill the pool for the next ones (with
    pending members when the template is missing: it failed to build, or is being built)."""
    try:
        found = _template_for(config)
    except CocoonError as err:
        logger.info("pool: not refilled: %s", err)
        return
    if found is not None:
        refill(found[0], config, found[1])
