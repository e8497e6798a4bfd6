#!/usr/bin/env python3
"""Host memory per idle sandbox: at 1, 10 and 50 idle containers, every host process counted.

Each container is a busybox `sleep` started with `cocoon run --detach` (from the template, the
default under TCG) in private roots. After `--settle` seconds, for every container, the PSS of
each of its host processes (QEMU, virtiofsd, the sandbox monitor, the per-process shim and its
placeholder) from /proc/<pid>/smaps_rollup, plus the pages of QEMU's guest-RAM memfd that no
PSS counts (a clone that shares its RAM with virtiofsd holds a copy of the template's, most of
which the guest has not touched since: resident, but mapped by nobody). Cross-check: the drop
of MemAvailable from before the first container, divided by their number. Reported: the mean
per sandbox and each process's share, and how many idle sandboxes fit in 16 GiB at that rate;
then every container answers `exec true` (counted), and all are deleted.

`--private` also measures ten sandboxes without a share (started through the launcher with
`share=False`): what a clone costs when no host directory must be live in the guest (a memfd
copy of the template's RAM too, since QEMU runs as a user of its own: docs/templates.md).

`--cold` also measures ten sandboxes booted cold (`COCOON_TEMPLATES=off`): the baseline.

Run: .venv/bin/python bench/footprint.py [--counts 1,10,50] [--settle 5] [--private] [--cold]
     [--json] [--plot]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import (
    PLOTS,
    Place,
    busybox_bundle,
    children_of,
    mem_available_kib,
    process_kind,
    pss_kib,
    stacked_plot,
    unmapped_memfd_kib,
)

from cocoon.sandbox.launcher import start_sandbox, stop_sandbox
from cocoon.sandbox.layout import SandboxConfig

GIB16_KIB = 16 << 20
HEADROOM_KIB = 1 << 20  # no new sandbox once the host has less than this available
KINDS = ("qemu", "guest RAM copy (unmapped)", "monitor", "shim", "virtiofsd")


def sandbox_pids(place: Place, container: str) -> dict[str, list[int]]:
    """The host processes of one container: its shim (and placeholder), and its monitor,
    QEMU and virtiofsd (found by the VM directory in their command lines)."""
    from cocoon.sandbox.launcher import sandbox_processes

    state = json.loads((place.root / container / "state.json").read_text())
    found: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for pid in sandbox_processes(Path(state["vm_dir"])):
        kind = process_kind(pid)
        if kind is not None:
            found[kind].append(pid)
    if state.get("pid"):
        found["shim"] = sorted(children_of([int(state["pid"])]))
    return found


def measure_count(place: Place, bundle: str, count: int, settle: float) -> dict[str, Any]:
    before = mem_available_kib()
    wanted = [f"idle-{count}-{i}" for i in range(count)]

    def up(name: str) -> str | None:
        if mem_available_kib() < HEADROOM_KIB:  # stop short rather than wake the OOM killer
            return None
        place.run("run", "--detach", "--bundle", bundle, name, timeout=900)
        return name

    with ThreadPoolExecutor(max_workers=2) as workers:
        names = [name for name in workers.map(up, wanted) if name is not None]
    if not names:
        raise SystemExit("no sandbox started: the host is short of memory")
    time.sleep(settle)
    per_kind: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for name in names:
        pids = sandbox_pids(place, name)
        for kind in ("qemu", "monitor", "shim", "virtiofsd"):
            per_kind[kind].append(sum(pss_kib(pid) for pid in pids[kind]))
        per_kind["guest RAM copy (unmapped)"].append(
            sum(unmapped_memfd_kib(pid) for pid in pids["qemu"]))
    dropped_each = (before - mem_available_kib()) / len(names)
    started = time.monotonic()
    answered = sum(1 for name in names
                   if place.run("exec", name, "true", check=False).returncode == 0)
    exec_seconds = time.monotonic() - started
    with ThreadPoolExecutor(max_workers=2) as workers:
        list(workers.map(lambda n: place.run("delete", "--force", n, check=False), names))
    means = {kind: statistics.mean(values) / 1024 for kind, values in per_kind.items()}
    total = sum(means.values())
    return {"sandboxes": len(names), "asked": count, "per_sandbox_mib": round(total, 1),
            "by_process_mib": {k: round(v, 1) for k, v in means.items()},
            "share": {k: round(v / total, 3) for k, v in means.items()},
            "memavailable_drop_per_sandbox_mib": round(dropped_each / 1024, 1),
            "fit_in_16gib": int(GIB16_KIB / (total * 1024)),
            "answered_exec": answered, "exec_all_s": round(exec_seconds, 1)}


def measure_private(place: Place, settle: float) -> dict[str, Any]:
    """Ten share-less sandboxes through the launcher: clones without virtio-fs."""
    handles = []
    with place.applied(COCOON_TEMPLATES="on"):
        try:
            for index in range(10):
                handles.append(start_sandbox(SandboxConfig(
                    sandbox_id=f"private-{index}", vm_dir=str(place.vm_root / f"p{index}"),
                    share=False)))
            time.sleep(settle)
            qemu = [pss_kib(int(h.info["qemu_pid"])) for h in handles]
            copy = [unmapped_memfd_kib(int(h.info["qemu_pid"])) for h in handles]
            monitor = [pss_kib(h.monitor_pid) for h in handles]
        finally:
            for handle in handles:
                stop_sandbox(handle.layout, grace=1.0)
    each = statistics.mean(qemu) + statistics.mean(copy) + statistics.mean(monitor)
    return {"sandboxes": 10, "qemu_mib": round(statistics.mean(qemu) / 1024, 1),
            "copy_mib": round(statistics.mean(copy) / 1024, 1),
            "monitor_mib": round(statistics.mean(monitor) / 1024, 1),
            "per_sandbox_mib": round(each / 1024, 1)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    place = Place.make("cbf")
    bundle = str(busybox_bundle(place.bundles / "sleep", ["sleep", "100000"]))
    results: dict[str, Any] = {"counts": []}
    try:
        place.run("template", "build")
        for count in args.counts:
            results["counts"].append(measure_count(place, bundle, count, args.settle))
        if args.cold:
            place.extra_env["COCOON_TEMPLATES"] = "off"
            results["cold"] = measure_count(place, bundle, 10, args.settle)
            del place.extra_env["COCOON_TEMPLATES"]
        if args.private:
            results["private"] = measure_private(place, args.settle)
    finally:
        place.cleanup()
    if args.plot and results["counts"]:
        results["plot"] = str(plot(results) or "matplotlib is not installed")
    return results


def plot(results: dict[str, Any]) -> Path | None:
    at = results["counts"][-1]
    rows = {f"clone with a live share (default), {at['sandboxes']}": at["by_process_mib"]}
    if "cold" in results:
        rows["cold boot (templates off), 10"] = results["cold"]["by_process_mib"]
    if "private" in results:
        private = results["private"]
        rows["clone without a share, 10"] = {
            "qemu": private["qemu_mib"], "guest RAM copy (unmapped)": private["copy_mib"],
            "monitor": private["monitor_mib"]}
    return stacked_plot(PLOTS / "footprint.png", "host memory per idle sandbox (MiB), "
                        "every host process counted", rows, "MiB",
                        target=("issue 10's target", 64.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,10,50",
                        type=lambda text: [int(part) for part in text.split(",")])
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--private", action="store_true",
                        help="also measure ten sandboxes without a share")
    parser.add_argument("--cold", action="store_true",
                        help="also measure ten sandboxes booted cold (the baseline)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", action="store_true", help="write docs/img/footprint.png")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for entry in result["counts"]:
        parts = ", ".join(f"{kind} {mib:.1f}" for kind, mib in entry["by_process_mib"].items())
        short = f" (of {entry['asked']} asked: the host ran short of memory)" \
            if entry["sandboxes"] < entry["asked"] else ""
        print(f"{entry['sandboxes']:3d} sandboxes{short}: {entry['per_sandbox_mib']:6.1f} MiB each "
              f"({parts}); MemAvailable drop {entry['memavailable_drop_per_sandbox_mib']} "
              f"MiB each; {entry['fit_in_16gib']} fit in 16 GiB; "
              f"{entry['answered_exec']}/{entry['sandboxes']} answered exec "
              f"({entry['exec_all_s']} s for all)")
    if "cold" in result:
        cold = result["cold"]
        parts = ", ".join(f"{kind} {mib:.1f}" for kind, mib in cold["by_process_mib"].items())
        print(f"booted cold (templates off, 10): {cold['per_sandbox_mib']:.1f} MiB each "
              f"({parts}); MemAvailable drop {cold['memavailable_drop_per_sandbox_mib']} MiB")
    if "private" in result:
        private = result["private"]
        print(f"without a share (10 clones): {private['per_sandbox_mib']} MiB "
              f"each (QEMU {private['qemu_mib']}, guest RAM copy (unmapped) "
              f"{private['copy_mib']}, monitor {private['monitor_mib']})")
    if "plot" in result:
        print(f"plot: {result['plot']}")


if __name__ == "__main__":
    main()
