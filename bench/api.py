#!/usr/bin/env python3
"""The Python API's costs beside the CLI's, measured in the same run.

- start: `with Sandbox(): sandbox.run(["true"])`, timed in this process from the `with` to
  the VM gone, beside `cocoon run --bundle B ID` of the same busybox `true` (spawn to exit),
  interleaved, `--runs` times each;
- call: `sandbox.run(["true"])` on a live sandbox, beside `cocoon exec ID true` on a live
  `cocoon run -d` container (both a process added to a running container through the agent;
  the CLI pays a Python start, the state root and a connection to the monitor each time),
  interleaved, `--calls` times each, after a pause of SETTLE s each (under TCG the guest goes
  on working for a moment after a process ends).

Everything runs in a private VM root and template directory (`benchlib.Place`); the template
is built first, untimed, by one run of each kind. `--pool N` keeps N restored clones waiting
(COCOON_POOL_SIZE), for both. Reported: medians, minimums and the API's median over the CLI's.

Run: .venv/bin/python bench/api.py [--runs 5] [--calls 20] [--pool 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from benchlib import Place, busybox_bundle

from cocoon import Sandbox

CONTAINER = "bench-api"
SETTLE = 0.3


def sandbox_start() -> float:
    started = time.perf_counter()
    with Sandbox() as sandbox:
        sandbox.run(["true"], check=True)
    return time.perf_counter() - started


def figures(api: list[float], cli: list[float]) -> dict[str, Any]:
    api_median, cli_median = statistics.median(api), statistics.median(cli)
    return {"api_s": round(api_median, 4), "cli_s": round(cli_median, 4),
            "api_min_s": round(min(api), 4), "cli_min_s": round(min(cli), 4),
            "ratio": round(api_median / cli_median, 2), "api_samples": [round(v, 4) for v in api],
            "cli_samples": [round(v, 4) for v in cli]}


def measure(runs: int, calls: int, pool: int) -> dict[str, Any]:
    place = Place.make("bapi-")
    if pool:
        place.extra_env["COCOON_POOL_SIZE"] = str(pool)
    try:
        true_bundle = busybox_bundle(place.bundles / "true", ["true"])
        sleep_bundle = busybox_bundle(place.bundles / "sleep", ["sleep", "3600"])
        with place.applied():
            sandbox_start()  # untimed: builds the template (and fills the pool)
            place.run("run", "--bundle", str(true_bundle), "warm")
            api_start: list[float] = []
            cli_start: list[float] = []
            for index in range(runs):
                api_start.append(sandbox_start())
                cli_start.append(place.timed("run", "--bundle", str(true_bundle), f"r{index}"))
            place.run("run", "-d", "--bundle", str(sleep_bundle), CONTAINER)
            api_call: list[float] = []
            cli_call: list[float] = []
            try:
                with Sandbox() as sandbox:
                    sandbox.run(["true"])  # untimed: the first exec translates its code
                    place.run("exec", CONTAINER, "true")
                    for _ in range(calls):
                        time.sleep(SETTLE)
                        started = time.perf_counter()
                        sandbox.run(["true"], check=True)
                        api_call.append(time.perf_counter() - started)
                        time.sleep(SETTLE)
                        cli_call.append(place.timed("exec", CONTAINER, "true"))
            finally:
                place.run("delete", "--force", CONTAINER, check=False)
        return {"runs": runs, "calls": calls, "pool": pool,
                "start": figures(api_start, cli_start), "call": figures(api_call, cli_call)}
    finally:
        place.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--pool", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.runs, args.calls, args.pool)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"medians of {args.runs} starts and {args.calls} calls, interleaved; pool {args.pool}")
    print(f"{'':<50}{'API':>9}{'CLI':>9}{'API/CLI':>9}{'API min':>9}{'CLI min':>9}")
    rows = (("start: with Sandbox(): run([true]) | cocoon run", "start"),
            ("call: sandbox.run([true]) | cocoon exec true", "call"))
    for label, key in rows:
        f = result[key]
        print(f"{label:<50}{f['api_s']:>8.3f}s{f['cli_s']:>8.3f}s{f['ratio']:>9.2f}"
              f"{f['api_min_s']:>8.3f}s{f['cli_min_s']:>8.3f}s")


if __name__ == "__main__":
    main()
