#!/usr/bin/env python3
"""Start-up: `cocoon run` of `true` cold, from a template and from the warm pool, beside the
bare-QEMU floor measured in the same run.

Everything lives in private roots (state, VMs, templates), so the benchmark builds its own
template first (its build time is reported, not counted). Then, `--runs` times, interleaved so
that a change in the host's load touches all alike:

- floor: QEMU booting the same kernel into the floor initrd, spawn to exit (`benchlib`);
- cold: `cocoon run` of `true` with templates off (`COCOON_TEMPLATES=off`);
- template: the same from the template (a clone restored, no pool);
- pool: the same with `COCOON_POOL_SIZE=1`, each run waiting first until the pool holds a ready
  clone (filled by the run before, in the background; the wait is not counted);
- clone agent: a sandbox started through the launcher from the template, the seconds from
  QEMU's start to the agent's first answer (the monitor's phases).

Each `cocoon run` is timed from spawning the command to its exit as an engine sees it (CLI
start, VM, container, teardown). Reported: medians and every sample; `--plot` writes
docs/img/start.png.

Run: .venv/bin/python bench/start.py [--runs 5] [--json] [--plot]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from benchlib import PLOTS, Place, bar_plot, busybox_bundle, floor_seconds

from cocoon.hypervisor import accel
from cocoon.sandbox import pool
from cocoon.sandbox.launcher import start_sandbox, stop_sandbox
from cocoon.sandbox.layout import SandboxConfig

TARGETS = {"template": 0.6, "pool": 0.35, "clone agent": 0.1}


def wait_for_pool(place: Place, timeout: float = 300.0) -> None:
    with place.applied():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(member.ready for member in pool.members()):
                return
            time.sleep(0.1)
    raise SystemExit(f"the pool did not fill within {timeout:.0f} s")


def clone_agent_seconds(place: Place, index: int) -> float:
    """QEMU start to the clone agent's first answer, from the monitor's own phases."""
    with place.applied(COCOON_TEMPLATES="on", COCOON_POOL_SIZE="0"):
        config = SandboxConfig(sandbox_id=f"agent-{index}",
                               vm_dir=str(place.vm_root / f"a{index}"))
        handle = start_sandbox(config)
        try:
            if not str(handle.info.get("started_from", "")).startswith("template"):
                raise SystemExit(f"the sandbox did not start from the template: {handle.info}")
            phases = handle.info["phases"]
            return float(phases["health answered"]) - float(phases["qemu started"])
        finally:
            stop_sandbox(handle.layout, grace=1.0)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    decision = asyncio.run(accel.choose_accel_async())
    place = Place.make("cbs")
    bundle = str(busybox_bundle(place.bundles / "true", ["true"]))
    samples: dict[str, list[float]] = {"floor": [], "cold": [], "template": [], "pool": [],
                                       "clone agent": []}
    try:
        started = time.monotonic()
        place.run("template", "build", COCOON_TEMPLATES="on")
        build = time.monotonic() - started
        # one untimed run of each (page cache, .pyc files), the pool's first fill among them
        place.run("run", "--bundle", bundle, "warm", COCOON_TEMPLATES="off")
        place.run("run", "--bundle", bundle, "warm", COCOON_TEMPLATES="on", COCOON_POOL_SIZE="1")
        for index in range(args.runs):
            samples["floor"].append(floor_seconds(place.base / "floor", decision))
            samples["cold"].append(place.timed("run", "--bundle", bundle, f"cold-{index}",
                                               COCOON_TEMPLATES="off"))
            samples["template"].append(place.timed("run", "--bundle", bundle, f"tpl-{index}",
                                                   COCOON_TEMPLATES="on"))
            wait_for_pool(place)
            samples["pool"].append(place.timed("run", "--bundle", bundle, f"pool-{index}",
                                               COCOON_TEMPLATES="on", COCOON_POOL_SIZE="1"))
            samples["clone agent"].append(clone_agent_seconds(place, index))
    finally:
        place.cleanup()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    result = {"accel": decision.accel, "runs": args.runs, "template_build_s": round(build, 2),
              "median_s": {k: round(v, 3) for k, v in medians.items()},
              "samples_s": {k: [round(x, 3) for x in v] for k, v in samples.items()},
              "ratio_to_floor": {k: round(v / medians["floor"], 2)
                                 for k, v in medians.items() if k != "floor"},
              "targets_s": TARGETS}
    if args.plot:
        names = ["cold", "template", "pool"]
        path = bar_plot(PLOTS / "start.png",
                        f"cocoon run true ({decision.accel}, median of {args.runs})",
                        names, [medians[n] for n in names], "s",
                        reference=("bare QEMU boot", medians["floor"]))
        result["plot"] = str(path) if path else "matplotlib is not installed"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", action="store_true", help="write docs/img/start.png")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    medians, samples = result["median_s"], result["samples_s"]
    print(f"accel {result['accel']}, medians of {result['runs']} interleaved runs "
          f"(template built first in {result['template_build_s']} s)")
    print(f"{'':28} {'median':>8} {'/ floor':>8} {'target':>8}   samples")
    for name, label in (("floor", "bare QEMU boot (floor)"), ("cold", "cocoon run true, cold"),
                        ("template", "cocoon run true, template"),
                        ("pool", "cocoon run true, pool"),
                        ("clone agent", "clone: QEMU start to agent")):
        ratio = f"{result['ratio_to_floor'][name]:.2f}x" if name != "floor" else ""
        target = f"{TARGETS[name]:.2f}" if name in TARGETS else ""
        print(f"{label:28} {medians[name]:8.3f} {ratio:>8} {target:>8}   {samples[name]}")
    if "plot" in result:
        print(f"plot: {result['plot']}")


if __name__ == "__main__":
    main()
