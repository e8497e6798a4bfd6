#!/usr/bin/env python3
"""Load: many sandboxes at once, each streaming checksummed stdout, then an exec storm.

1. `--sandboxes` (20) containers are started at once with `cocoon run` in the foreground, each
   in its own VM; each writes `--mb` (50) MB of /dev/urandom to its stdout through `tee`, and
   the SHA-256 of what it wrote to its stderr. The bench hashes what arrives on each stdout and
   compares: a byte lost, added or reordered is a mismatch. Reported: the wall time until all
   have exited, the aggregate rate (over that wall time, boots included) and each sandbox's
   streaming rate (from its first byte to its exit; median), mismatches and non-zero exits.
2. `--containers` (10) containers sleep (`run --detach`); `--execs` (500) `cocoon exec ID sh -c
   'echo $((N * 7))'` run across them, `--parallel` (10) at a time; each must exit 0 and print
   its own number. Reported: wall time, execs per second, latency median and 95th percentile,
   failures.
3. Everything is deleted, and what is left in the private roots (processes, directories) is
   reported: the run fails on any mismatch, failure or leftover.

The same two loads run under runc after, as the baseline of the same run (containers on the
host, from copies of the same busybox bundle).

Run: .venv/bin/python bench/load.py [--sandboxes 20] [--mb 50] [--containers 10] [--execs 500]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import Place, busybox_bundle

from cocoon.sandbox.launcher import sandbox_processes

CHUNK = 1 << 20
RUNC = shutil.which("runc") or "runc"
# runc applies rlimits on the host, where this kind of sandbox caps them
RLIMITS = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
           {"type": "RLIMIT_NPROC", "hard": 1024, "soft": 1024}]


@dataclass
class Runner:
    """One runtime's command line and environment: cocoon's (its Place) or runc's."""

    name: str
    prefix: list[str]
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]

    def run(self, *args: str, check: bool = True) -> None:
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                                  timeout=900, check=False)
            err.seek(0)
            if check and proc.returncode != 0:
                raise SystemExit(f"{self.name} {' '.join(args)}: {err.read().strip()[-500:]}")


def stream_one(runner: Runner, bundle: Path, cid: str, size: int) -> dict[str, Any]:
    """`run` one streaming container in the foreground; hash its stdout as it arrives."""
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(runner.argv("run", "--bundle", str(bundle), cid),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=runner.env)
        assert proc.stdout is not None
        first = None
        while chunk := os.read(proc.stdout.fileno(), CHUNK):
            first = first or time.perf_counter()
            digest.update(chunk)
            received += len(chunk)
        status = proc.wait()
        err.seek(0)
        stderr = err.read()
    ended = time.perf_counter()
    claimed = stderr.split()[0] if stderr.split() else ""
    return {"id": cid, "status": status, "bytes": received, "seconds": ended - started,
            "streaming_seconds": ended - (first or ended),
            "ok": status == 0 and received == size and claimed == digest.hexdigest(),
            "stderr": stderr.strip()[-300:] if status else ""}


def streams(runner: Runner, bundles: Path, count: int, megabytes: int) -> dict[str, Any]:
    size = megabytes * 1_000_000
    script = (f"exec 3>&1; head -c {size} /dev/urandom | tee /proc/self/fd/3 | "
              "sha256sum >&2")
    bundle = busybox_bundle(bundles / f"stream-{runner.name}", ["sh", "-c", script])
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["rlimits"] = RLIMITS
    (bundle / "config.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda i: stream_one(runner, bundle, f"stream{i}", size),
                                range(count)))
    wall = time.perf_counter() - started
    total = sum(r["bytes"] for r in results)
    return {"sandboxes": count, "megabytes_each": megabytes, "wall_seconds": round(wall, 1),
            "aggregate_mb_per_s": round(total / wall / 1e6, 1),
            # from each one's first byte to its exit: the stream, not the boot
            "per_sandbox_mb_per_s_median": round(statistics.median(
                r["bytes"] / max(r["streaming_seconds"], 1e-3) / 1e6 for r in results), 1),
            "mismatches": [r["id"] for r in results if not r["ok"]],
            "errors": [r["stderr"] for r in results if r["stderr"]][:3]}


def one_exec(runner: Runner, cid: str, number: int) -> tuple[bool, float]:
    started = time.perf_counter()
    result = subprocess.run(runner.argv("exec", cid, "sh", "-c", f"echo $(({number} * 7))"),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=runner.env, timeout=300, check=False)
    elapsed = time.perf_counter() - started
    return result.returncode == 0 and result.stdout.strip() == str(number * 7), elapsed


def exec_storm(runner: Runner, bundles: Path, containers: int, execs: int,
               parallel: int) -> dict[str, Any]:
    bundle = busybox_bundle(bundles / f"sleeper-{runner.name}", ["sleep", "100000"])
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["rlimits"] = RLIMITS
    (bundle / "config.json").write_text(json.dumps(spec))
    ids = [f"storm{i}" for i in range(containers)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=containers) as pool:
        list(pool.map(lambda cid: runner.run("run", "--detach", "--bundle", str(bundle), cid),
                      ids))
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(lambda n: one_exec(runner, ids[n % containers], n),
                                range(execs)))
    wall = time.perf_counter() - started
    latencies = sorted(seconds for _, seconds in results)
    return {"containers": containers, "execs": execs, "parallel": parallel,
            "wall_seconds": round(wall, 1), "execs_per_s": round(execs / wall, 1),
            "latency_median_ms": round(statistics.median(latencies) * 1000),
            "latency_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000),
            "failures": sum(1 for ok, _ in results if not ok), "ids": ids}


def leftovers(place: Place) -> list[str]:
    found = [f"process {pid}" for pid in sandbox_processes(place.vm_root)]
    found += [f"vm dir {p.name}" for p in place.vm_root.iterdir() if not p.name.startswith(".")]
    found += [f"state dir {p.name}" for p in place.root.iterdir() if p.is_dir()]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sandboxes", type=int, default=20)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--execs", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    place = Place.make("cload-")
    cocoon = Runner("cocoon", place.cocoon(), place.env())
    runc = Runner("runc", [RUNC, "--root", str(place.base / "runc-state")], dict(os.environ))
    report: dict[str, Any] = {}
    try:
        # the template is built once before the storm of starts, as on a host in use
        place.run("run", "--bundle", str(busybox_bundle(place.bundles / "warm", ["true"])),
                  "warm", timeout=900)
        for runner in (cocoon, runc):
            report[f"streams {runner.name}"] = streams(runner, place.bundles, args.sandboxes,
                                                       args.mb)
            storm = exec_storm(runner, place.bundles, args.containers, args.execs,
                               args.parallel)
            for cid in storm.pop("ids"):
                runner.run("delete", "--force", cid, check=False)
            report[f"exec storm {runner.name}"] = storm
        time.sleep(1.0)
        report["leftovers"] = leftovers(place)
    finally:
        place.cleanup()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name in ("cocoon", "runc"):
            s, e = report[f"streams {name}"], report[f"exec storm {name}"]
            print(f"{name}: {s['sandboxes']} containers at once, {s['megabytes_each']} MB of "
                  f"stdout each: all done in {s['wall_seconds']} s, {s['aggregate_mb_per_s']} "
                  f"MB/s in all, {s['per_sandbox_mb_per_s_median']} MB/s per container "
                  f"(median); checksum mismatches or failures: {len(s['mismatches'])} "
                  f"{s['errors'] or ''}")
            print(f"{name}: exec storm, {e['execs']} execs over {e['containers']} containers, "
                  f"{e['parallel']} at a time: {e['wall_seconds']} s, {e['execs_per_s']}/s, "
                  f"latency median {e['latency_median_ms']} ms, p95 {e['latency_p95_ms']} ms; "
                  f"failures: {e['failures']}")
        print(f"left behind: {report['leftovers'] or 'nothing'}")
    failed = report["leftovers"] or any(
        report[f"streams {n}"]["mismatches"] or report[f"exec storm {n}"]["failures"]
        for n in ("cocoon", "runc"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
