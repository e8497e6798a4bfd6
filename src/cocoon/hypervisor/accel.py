"""Choosing KVM or TCG by proof, once per host/QEMU/guest-kernel combination.

KVM is used only when a probe VM really boots under it (see `probe`); otherwise TCG with a CPU
model that has RDRAND. Nothing hard-wires either: the decision is a cached probe result, keyed
by what could change the answer (host kernel release, QEMU version, guest kernel release), so
later VM starts pay a JSON read instead of a boot. `COCOON_ACCEL=kvm|tcg` overrides the probe
for tests and for users who know their host.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cocoon.config import current as settings
from cocoon.errors import HypervisorError
from cocoon.guest import cache as assetcache
from cocoon.hypervisor.config import ACCELS, KVM_CPU, TCG_CPU, Accel
from cocoon.hypervisor.probe import FLOOR_MARKER, PROBE_TIMEOUT, probe_boot

logger = logging.getLogger("cocoon.hypervisor.accel")

ENV_ACCEL = "COCOON_ACCEL"
CACHE_FILE = "accel-probe.json"
CACHE_VERSION = 1
KVM_DEVICE = Path("/dev/kvm")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_API_VERSION = 12  # the only version Linux has ever shipped and QEMU accepts

Source = Literal["probe", "cache", "env"]


@dataclass(frozen=True)
class ProbeKey:
    """What a cached decision depends on; any change means probing again."""

    host_kernel: str
    qemu_version: str
    guest_kernel: str


@dataclass(frozen=True)
class AccelDecision:
    """The acceleration to start VMs with, and the evidence behind it.

    `verified` says a probe VM booted under `accel`; `boot_seconds` is that boot's time from
    QEMU's spawn to the marker. `kvm_detail` tells what was found about KVM even when TCG won.
    """

    accel: Accel
    cpu_model: str
    reason: str
    source: Source
    verified: bool
    kvm_usable: bool
    kvm_detail: str
    boot_seconds: float | None = None
    key: ProbeKey | None = None
    probed_at: float | None = None  # unix time of the probe

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccelDecision:
        """Rebuild a cached decision; `ValueError`/`TypeError`/`KeyError` if it is malformed."""
        key = data.get("key")
        accel = data["accel"]
        if accel not in ACCELS:
            raise ValueError(f"unknown accel {accel!r}")
        boot = data.get("boot_seconds")
        probed_at = data.get("probed_at")
        return cls(accel=accel, cpu_model=str(data["cpu_model"]), reason=str(data["reason"]),
                   source="cache", verified=bool(data["verified"]),
                   kvm_usable=bool(data["kvm_usable"]), kvm_detail=str(data["kvm_detail"]),
                   boot_seconds=None if boot is None else float(boot),
                   key=ProbeKey(**key) if isinstance(key, dict) else None,
                   probed_at=None if probed_at is None else float(probed_at))


def from_env() -> AccelDecision | None:
    """The decision `hypervisor.accel` (or `COCOON_ACCEL`) forces, or None for auto."""
    value = settings().hypervisor.accel
    origin = settings().source("hypervisor.accel")
    if value == "auto":
        return None
    if value == "kvm":
        return AccelDecision("kvm", KVM_CPU, f"set by {origin}", "env", verified=False,
                             kvm_usable=True, kvm_detail=f"not probed (kvm set by {origin})")
    return AccelDecision("tcg", TCG_CPU, f"set by {origin}", "env", verified=False,
                         kvm_usable=False, kvm_detail=f"not probed (tcg set by {origin})")


def kvm_device(path: Path = KVM_DEVICE) -> tuple[bool, str]:
    """Whether the KVM device opens and speaks the expected API, and what was seen."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, f"{path} does not exist"
    except OSError as err:
        return False, f"cannot open {path}: {err.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as err:
        return False, f"{path} refuses KVM_GET_API_VERSION: {err.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return False, f"{path} speaks KVM API {version}, QEMU needs {KVM_API_VERSION}"
    return True, f"{path} opens (KVM API {version})"


_VERSIONS: dict[tuple[str, int, int, int], str] = {}
VERSION_MEMO = "qemu-version.json"  # in the asset cache: the binary's identity -> its version


def qemu_version(binary: str = "qemu-system-x86_64") -> str:
    """`7.2.22` from `qemu-system-x86_64 --version`, asked once per binary file and process
    (every sandbox start needs it, for the probe's key and the template's)."""
    path = shutil.which(binary) or binary
    try:
        info = os.stat(path)
        key = (path, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        key = (path, 0, 0, 0)
    if key in _VERSIONS:
        return _VERSIONS[key]
    memo = assetcache.default_cache_dir() / VERSION_MEMO
    text_key = "|".join(str(part) for part in key)
    known = assetcache.read_json(memo)
    if isinstance(known, dict) and isinstance(known.get(text_key), str) and key[1]:
        _VERSIONS[key] = known[text_key]
        return _VERSIONS[key]
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise HypervisorError(f"cannot run {binary} --version: {err}", binary=binary) from err
    match = re.search(r"version\s+(\S+)", out)
    if not match:
        raise HypervisorError(f"{binary} --version printed no version", output=out[:200])
    _VERSIONS[key] = match.group(1)
    if key[1]:
        with contextlib.suppress(OSError):
            assetcache.write_json_atomic(memo, {text_key: match.group(1)})
    return match.group(1)


def probe_key(guest_kernel: str, qemu_binary: str = "qemu-system-x86_64") -> ProbeKey:
    return ProbeKey(host_kernel=os.uname().release, qemu_version=qemu_version(qemu_binary),
                    guest_kernel=guest_kernel)


def load_cached(cache_dir: Path, key: ProbeKey) -> AccelDecision | None:
    """The cached decision for `key`, or None (absent, other key, unreadable, malformed)."""
    data = assetcache.read_json(cache_dir / CACHE_FILE)
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return None
    for entry in data.get("entries", []):
        if not isinstance(entry, dict) or entry.get("key") != asdict(key):
            continue
        try:
            return AccelDecision.from_json(entry)
        except (KeyError, TypeError, ValueError) as err:
            logger.warning("ignoring malformed entry in %s: %r", cache_dir / CACHE_FILE, err)
    return None


def save_cached(cache_dir: Path, decision: AccelDecision) -> None:
    """Store `decision` beside the entries for other keys (a host may switch guest kernels)."""
    if decision.key is None:
        raise HypervisorError("only a probed decision (with a key) can be cached")
    path = cache_dir / CACHE_FILE
    data = assetcache.read_json(path)
    entries = data.get("entries", []) if isinstance(data, dict) else []
    kept = [entry for entry in entries
            if isinstance(entry, dict) and entry.get("key") != asdict(decision.key)]
    try:
        assetcache.write_json_atomic(path, {"version": CACHE_VERSION,
                                            "entries": [*kept, decision.to_json()]})
    except OSError as err:
        logger.warning("cannot cache the acceleration probe in %s: %s", path, err)


async def probe_and_decide(key: ProbeKey, *, kernel: Path, initrd: Path,
                           marker: str = FLOOR_MARKER, timeout: float = PROBE_TIMEOUT,
                           qemu_binary: str = "qemu-system-x86_64") -> AccelDecision:
    """Probe KVM when its device works, else (or when its VM fails) verify TCG by a boot too."""
    usable, kvm_detail = kvm_device()
    why_not_kvm = kvm_detail
    if usable:
        kvm = await probe_boot("kvm", kernel=kernel, initrd=initrd, cpu_model=KVM_CPU,
                               marker=marker, timeout=timeout, qemu_binary=qemu_binary)
        if kvm.booted:
            return AccelDecision("kvm", KVM_CPU, kvm.detail, "probe", verified=True,
                                 kvm_usable=True, kvm_detail=f"{kvm_detail}; {kvm.detail}",
                                 boot_seconds=kvm.seconds, key=key, probed_at=time.time())
        why_not_kvm = kvm.detail
        kvm_detail = f"{kvm_detail}, but {kvm.detail}"
    tcg = await probe_boot("tcg", kernel=kernel, initrd=initrd, cpu_model=TCG_CPU,
                           marker=marker, timeout=timeout, qemu_binary=qemu_binary)
    reason = why_not_kvm if tcg.booted else f"{why_not_kvm}; and {tcg.detail}"
    return AccelDecision("tcg", TCG_CPU, reason, "probe", verified=tcg.booted, kvm_usable=False,
                         kvm_detail=kvm_detail, boot_seconds=tcg.seconds if tcg.booted else None,
                         key=key, probed_at=time.time())


async def decide(*, kernel: Path, kernel_release: str, floor_initrd: Path,
                 cache_dir: Path | None = None, reprobe: bool = False,
                 marker: str = FLOOR_MARKER, timeout: float = PROBE_TIMEOUT,
                 qemu_binary: str = "qemu-system-x86_64") -> AccelDecision:
    """The environment override, else the cached decision, else a fresh probe (then cached).

    Only a decision whose VM booted is cached, so a transient failure is probed again next time.
    """
    forced = from_env()
    if forced is not None:
        return forced
    cache = assetcache.resolve_cache_dir(cache_dir)
    key = probe_key(kernel_release, qemu_binary)
    if not reprobe:
        cached = load_cached(cache, key)
        if cached is not None:
            logger.debug("acceleration %s from cache (%s)", cached.accel, cached.reason)
            return cached
    decision = await probe_and_decide(key, kernel=kernel, initrd=floor_initrd, marker=marker,
                                      timeout=timeout, qemu_binary=qemu_binary)
    logger.info("acceleration %s (cpu %s): %s", decision.accel, decision.cpu_model,
                decision.reason)
    if decision.verified:
        save_cached(cache, decision)
    return decision


async def choose_accel_async(reprobe: bool = False,
                             cache_dir: Path | None = None) -> AccelDecision:
    """`decide` for the current guest kernel and floor initrd, fetched if need be."""
    forced = from_env()
    if forced is not None:
        return forced  # no assets needed, so none fetched
    from cocoon.guest import assets  # pulls in apt tooling only when a probe may run

    kernel = await asyncio.to_thread(assets.ensure_kernel, cache_dir)
    initrd = await asyncio.to_thread(assets.ensure_floor_initrd, cache_dir)
    return await decide(kernel=kernel.vmlinuz, kernel_release=kernel.release,
                        floor_initrd=initrd, cache_dir=cache_dir, reprobe=reprobe)


def choose_accel(reprobe: bool = False, cache_dir: Path | None = None) -> AccelDecision:
    """Synchronous `choose_accel_async`, for the CLI; not for use inside a running loop."""
    return asyncio.run(choose_accel_async(reprobe, cache_dir))
