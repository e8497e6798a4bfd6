"""What `cocoon template build|show|rm` does: build the template a sandbox would use, list
templates with their state, remove them (and the pool's clones of them)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon.config import current as settings
from cocoon.errors import TemplateError
from cocoon.guest.cache import resolve_cache_dir
from cocoon.hypervisor import accel as accel_mod
from cocoon.runtime import sizing
from cocoon.sandbox import pool, vmstart
from cocoon.sandbox.layout import SandboxConfig, vm_root
from cocoon.template import build as builder
from cocoon.template import store


def _config(memory_mib: int, vcpus: int, work: Path) -> SandboxConfig:
    return SandboxConfig(sandbox_id="template", vm_dir=str(work), memory_mib=memory_mib,
                         vcpus=vcpus)


async def build(memory_mib: int | None = None, vcpus: int | None = None,
                rebuild: bool = False) -> tuple[store.Template, bool]:
    """The template sandboxes of this size use (by default the configured VM's), built unless
    a whole one exists (or `rebuild`); returns it and whether it was built now."""
    memory_mib = memory_mib or sizing.default_memory_mib()
    vcpus = vcpus or settings().hypervisor.vcpus
    root = vm_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix="tpl-", dir=root))  # short socket paths
    try:
        decision = await accel_mod.choose_accel_async()
        config = _config(memory_mib, vcpus, work)
        boot = await asyncio.to_thread(vmstart.guest_boot, config, decision)
        spec = vmstart.template_spec(config, boot)
        async with store.locked(boot.cache, spec.name, vmstart.BUILD_LOCK_TIMEOUT):
            if not rebuild:
                try:
                    found = store.find(boot.cache, spec)
                except TemplateError:
                    found = None
                if found is not None:
                    return found, False
            return await builder.build(spec, boot.cache, work), True
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    problem: str | None
    meta: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        spec = self.meta.get("spec", {})
        return {
            "name": self.name, "path": str(self.path), "ok": self.problem is None,
            "problem": self.problem, "memory_mib": spec.get("memory_mib"),
            "vcpus": spec.get("vcpus"), "accel": spec.get("accel"),
            "machine": spec.get("machine"), "image_digest": spec.get("image_digest"),
            "ram_data_bytes": self.meta.get("ram_allocated_bytes"),
            "built_at": self.meta.get("built_at"),
            "build_seconds": self.meta.get("build_seconds"),
        }


def show(cache_dir: Path | None = None) -> list[Entry]:
    cache = resolve_cache_dir(cache_dir)
    entries = []
    for path, found in store.listing(cache):
        if isinstance(found, store.Template):
            entries.append(Entry(path.name, path, None, found.meta))
        else:
            entries.append(Entry(path.name, path, str(found), {}))
    return entries


def pool_members() -> dict[str, tuple[int, int]]:
    """Per template: how many pooled clones are ready and how many are starting."""
    counts: dict[str, tuple[int, int]] = {}
    for member in pool.members():
        ready, starting = counts.get(member.template, (0, 0))
        counts[member.template] = (ready + 1, starting) if member.ready else (ready,
                                                                               starting + 1)
    return counts


def remove(names: list[str] | None = None, cache_dir: Path | None = None
           ) -> tuple[list[str], list[str]]:
    """Remove the named templates (all when `names` is empty) and stop the pool's clones of
    them; returns the templates removed and the pool members stopped."""
    cache = resolve_cache_dir(cache_dir)
    listed = {path.name: path for path, _ in store.listing(cache)}
    missing = sorted(set(names or ()) - set(listed))
    if missing:
        raise TemplateError(f"no template named {', '.join(missing)}", names=missing)
    chosen = set(names) if names else None
    stopped = pool.stop_sync(chosen)  # first: a member must not outlive its template
    removed = []
    for name, path in listed.items():
        if chosen is None or name in chosen:
            store.remove(path)
            removed.append(name)
    return removed, stopped
