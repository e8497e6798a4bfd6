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

Run: .venv/bin/python bench/load.py [--sandboxes 20] [--mb 50] [--containers 10] [--execs 500]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Place, busybox_bundle

from cocoon.sandbox.launcher import sandbox_processes

CHUNK = 1 << 20


def stream_one(place: Place, bundle: Path, cid: str, size: int) -> dict[str, Any]:
    """`cocoon run` one streaming container; hash its stdout as it arrives."""
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(place.cocoon("run", "--bundle", str(bundle), cid),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=place.env())
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


def streams(place: Place, count: int, megabytes: int) -> dict[str, Any]:
    size = megabytes * 1_000_000
    script = (f"exec 3>&1; head -c {size} /dev/urandom | tee /proc/self/fd/3 | "
              "sha256sum >&2")
    bundle = busybox_bundle(place.bundles / "stream", ["sh", "-c", script])
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda i: stream_one(place, bundle, f"stream{i}", size),
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


def one_exec(place: Place, cid: str, number: int) -> tuple[bool, float]:
    started = time.perf_counter()
    result = subprocess.run(place.cocoon("exec", cid, "sh", "-c", f"echo $(({number} * 7))"),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=place.env(), timeout=300, check=False)
    elapsed = time.perf_counter() - started
    return result.returncode == 0 and result.stdout.strip() == str(number * 7), elapsed


def exec_storm(place: Place, containers: int, execs: int, parallel: int) -> dict[str, Any]:
    bundle = busybox_bundle(place.bundles / "sleeper", ["sleep", "100000"])
    ids = [f"storm{i}" for i in range(containers)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=containers) as pool:
        list(pool.map(lambda cid: place.run("run", "--detach", "--bundle", str(bundle), cid),
                      ids))
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(lambda n: one_exec(place, ids[n % containers], n),
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
    report: dict[str, Any] = {}
    try:
        # the template is built once before the storm of starts, as on a host in use
        place.run("run", "--bundle", str(busybox_bundle(place.bundles / "warm", ["true"])),
                  "warm", timeout=900)
        report["streams"] = streams(place, args.sandboxes, args.mb)
        storm = exec_storm(place, args.containers, args.execs, args.parallel)
        for cid in storm.pop("ids"):
            place.run("delete", "--force", cid, check=False)
        report["exec_storm"] = storm
        time.sleep(1.0)
        report["leftovers"] = leftovers(place)
    finally:
        place.cleanup()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        s, e = report["streams"], report["exec_storm"]
        print(f"{s['sandboxes']} sandboxes at once, {s['megabytes_each']} MB of stdout each: "
              f"all done in {s['wall_seconds']} s, {s['aggregate_mb_per_s']} MB/s in all, "
              f"{s['per_sandbox_mb_per_s_median']} MB/s per sandbox (median); checksum "
              f"mismatches or failures: {len(s['mismatches'])} {s['errors'] or ''}")
        print(f"exec storm: {e['execs']} execs over {e['containers']} containers, "
              f"{e['parallel']} at a time: {e['wall_seconds']} s, {e['execs_per_s']}/s, "
              f"latency median {e['latency_median_ms']} ms, p95 {e['latency_p95_ms']} ms; "
              f"failures: {e['failures']}")
        print(f"left behind: {report['leftovers'] or 'nothing'}")
    failed = report["streams"]["mismatches"] or report["exec_storm"]["failures"] or \
        report["leftovers"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
