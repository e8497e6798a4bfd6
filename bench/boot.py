#!/usr/bin/env python3
"""Boot time and footprint of a sandbox, against the floor of a bare QEMU boot.

Measured in one run, each figure the median of `--runs` repetitions (floor and sandbox runs
alternate, so a change in the host's load touches both alike):

- floor: the same QEMU settings and kernel booting the floor initrd (busybox prints a marker and
  powers off), from spawning QEMU to its exit;
- sandbox: a sandbox started through the launcher, as the runtime starts one; the monitor's
  phases (from QEMU's start) up to "agent ready", and the ratio of that to the floor;
- the guest's own timeline (uptime at each step the agent logs on the console);
- the PSS of an idle sandbox's host processes (QEMU, virtiofsd, the monitor), from
  /proc/<pid>/smaps_rollup, `--idle` seconds after it became ready.

Run: .venv/bin/python bench/boot.py [--runs 5] [--idle 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import pss_kib

from cocoon.guest import assets
from cocoon.guest.floor import MARKER
from cocoon.hypervisor import accel
from cocoon.hypervisor.cmdline import build_command
from cocoon.hypervisor.config import VMConfig
from cocoon.sandbox.launcher import start_sandbox, stop_sandbox
from cocoon.sandbox.layout import SandboxConfig, vm_dir_for

FLOOR_TIMEOUT = 120.0
# the agent's console lines: "<step> at <uptime> s"
_GUEST_STEP = re.compile(r"cocoon\.agent\S*\[1\]: (?P<step>[a-z][a-z ]*?)(?: /dev/\S+)? at "
                         r"(?P<at>\d+\.\d+) s")


@dataclass
class Sample:
    floor: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    guest: dict[str, float] = field(default_factory=dict)
    pss_kib: dict[str, int] = field(default_factory=dict)
    start_call: float = 0.0  # start_sandbox() as its caller sees it


def boot_floor(work: Path, vm: VMConfig) -> float:
    """Seconds from spawning QEMU to its exit, the guest having printed the floor marker."""
    work.mkdir(parents=True, exist_ok=True)
    argv = build_command(vm)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout=FLOOR_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    console = vm.console_log.read_text(errors="replace")
    if code != 0 or MARKER not in console:
        raise SystemExit(f"floor boot failed (exit {code}): {console[-500:]}")
    return elapsed


def floor_config(work: Path, decision: accel.AccelDecision) -> VMConfig:
    kernel = assets.ensure_kernel()
    return VMConfig(name="bench-floor", kernel=kernel.vmlinuz,
                    initrd=assets.ensure_floor_initrd(), accel=decision.accel,
                    cpu_model=decision.cpu_model, qmp_socket=work / "qmp.sock",
                    console_log=work / "console.log")


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                continue
    return found


def kind_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "gone"
    exe = os.path.basename(argv[0].decode(errors="replace"))
    if exe.startswith("qemu-system"):
        return "qemu"
    if exe == "virtiofsd":
        return "virtiofsd"
    if b"cocoon.sandbox.monitor" in argv:
        return "monitor"
    return exe or "other"


def footprint(monitor_pid: int) -> dict[str, int]:
    """PSS by process kind over the monitor and everything it started."""
    by_kind: dict[str, int] = {}
    for pid in process_tree(monitor_pid):
        kind = kind_of(pid)
        by_kind[kind] = by_kind.get(kind, 0) + pss_kib(pid)
    by_kind["total"] = sum(by_kind.values())
    return by_kind


def guest_timeline(console: str) -> dict[str, float]:
    return {m["step"]: float(m["at"]) for m in _GUEST_STEP.finditer(console)}


def boot_sandbox(index: int, idle: float) -> Sample:
    sandbox_id = f"bench-{os.getpid()}-{index}"
    config = SandboxConfig(sandbox_id=sandbox_id,
                           vm_dir=str(vm_dir_for("bench", sandbox_id)), boot_timeout=120.0)
    sample = Sample()
    started = time.monotonic()
    handle = start_sandbox(config)
    try:
        sample.start_call = time.monotonic() - started
        sample.phases = dict(handle.info.get("phases", {}))
        time.sleep(idle)
        sample.pss_kib = footprint(handle.monitor_pid)
        sample.guest = guest_timeline(config.layout.console_log.read_text(errors="replace"))
    finally:
        stop_sandbox(config.layout)
    return sample


def median(values: Iterable[float]) -> float:
    found = list(values)
    return statistics.median(found) if found else float("nan")


def spread(values: list[float]) -> str:
    return f"{median(values):7.3f}  ({min(values):.3f}..{max(values):.3f})" if values else "n/a"


def report(samples: list[Sample], decision: accel.AccelDecision, image: assets.GuestImage
           ) -> dict[str, Any]:
    floor = [s.floor for s in samples]
    phase_names = list(samples[0].phases)
    phases = {name: [s.phases[name] for s in samples if name in s.phases]
              for name in phase_names}
    guest_steps = list(samples[0].guest)
    guest = {step: [s.guest[step] for s in samples if step in s.guest] for step in guest_steps}
    kinds = sorted({k for s in samples for k in s.pss_kib}, key=lambda k: (k == "total", k))
    pss = {kind: [s.pss_kib.get(kind, 0) / 1024 for s in samples] for kind in kinds}
    ready = median(phases.get("agent ready", []))
    manifest = json.loads(image.manifest.read_text())
    return {
        "runs": len(samples), "accel": decision.accel, "cpu": decision.cpu_model,
        "image": {"digest": image.digest[:16], "bytes": manifest.get("sizes", {}).get("initrd"),
                  "compression": manifest.get("compression")},
        "floor_s": median(floor), "agent_ready_s": ready, "ratio": ready / median(floor),
        "start_call_s": median(s.start_call for s in samples),
        "phases_s": {name: median(values) for name, values in phases.items()},
        "guest_uptime_s": {step: median(values) for step, values in guest.items()},
        "pss_mib": {kind: median(values) for kind, values in pss.items()},
        "_raw": {"floor": floor, "phases": phases, "guest": guest, "pss": pss},
    }


def print_report(result: dict[str, Any]) -> None:
    raw = result["_raw"]
    image = result["image"]
    print(f"boot benchmark: {result['runs']} runs, accel {result['accel']} "
          f"(cpu {result['cpu']}), guest image {image['digest']} "
          f"({(image['bytes'] or 0) / 1e6:.1f} MB, {image['compression']})")
    print("                                    median  (min..max), seconds")
    print(f"floor: bare QEMU boot to exit     {spread(raw['floor'])}")
    print(f"QEMU start -> agent ready         {spread(raw['phases'].get('agent ready', []))}")
    print(f"ratio agent ready / floor         {result['ratio']:7.2f}")
    print(f"start_sandbox() call              {result['start_call_s']:7.3f}")
    print("monitor phases (from QEMU start):")
    for name, values in raw["phases"].items():
        print(f"  {name:<31} {spread(values)}")
    print("guest timeline (guest uptime):")
    for step, values in raw["guest"].items():
        print(f"  {step:<31} {spread(values)}")
    print("PSS of an idle sandbox, MiB:")
    for kind, values in raw["pss"].items():
        print(f"  {kind:<31} {spread(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds an idle sandbox waits before its PSS is read")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    image = assets.ensure_guest_image()
    decision = asyncio.run(accel.choose_accel_async())
    work = Path(tempfile.mkdtemp(prefix="cboot-", dir="/tmp"))
    os.environ["COCOON_VM_DIR"] = str(work / "vm")
    samples: list[Sample] = []
    try:
        vm = floor_config(work / "floor", decision)
        for index in range(args.runs):
            sample = boot_sandbox(index, args.idle)
            sample.floor = boot_floor(work / "floor", vm)
            samples.append(sample)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = report(samples, decision, image)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "_raw"}, indent=1))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
