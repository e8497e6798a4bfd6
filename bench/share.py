#!/usr/bin/env python3
"""The share (virtio-fs) against the host's own file system: Cocoon beside runc, same run.

A host directory holding a 200 MB file and a 5,000-file tree is bind-mounted into a busybox
container at /data. Inside, one script times (from /proc/uptime, 10 ms resolution): a first
sequential read of the file (the guest's page cache is cold; the host's is warm, as it is for
runc), a second read, a 200 MB sequential write (then `sync`), and a walk that lists and stats
every file of the tree. runc runs the same bundle in the same run, so its figures are the
host's file system seen from a container. Cocoon runs once per virtiofsd tuning given with
`--tuning` (cache mode, thread pool size, writeback; see cocoon.sandbox.virtiofsd.Tuning).

Run: .venv/bin/python bench/share.py [--mib 200] [--files 5000] [--runs 3]
                                     [--tuning auto,0,0 --tuning always,4,1 ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import Place, busybox_bundle

SCRIPT = r"""
t() { read up _ < /proc/uptime; echo $up; }
a=$(t); dd if=/data/big of=/dev/null bs=1M 2>/dev/null; b=$(t)
dd if=/data/big of=/dev/null bs=1M 2>/dev/null; c=$(t)
dd if=/dev/zero of=/data/out bs=1M count=MIB 2>/dev/null; sync; d=$(t)
n=$(ls -lR /data/tree | wc -l); e=$(t)
rm -f /data/out
echo RESULT $a $b $c $d $e $n
"""
PHASES = ("read_cold_mib_s", "read_again_mib_s", "write_mib_s", "walk_files_s")


def make_data(directory: Path, mib: int, files: int) -> None:
    directory.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    with (directory / "big").open("wb") as out:
        for _ in range(mib):
            out.write(chunk)
    tree = directory / "tree"
    per_dir = 100
    for index in range(files):
        sub = tree / f"d{index // per_dir:03d}"
        if index % per_dir == 0:
            sub.mkdir(parents=True)
        (sub / f"f{index:05d}").write_bytes(b"x" * (index % 4096))


def spec(data: Path, mib: int) -> dict[str, Any]:
    return {"mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/data", "type": "bind", "source": str(data),
         "options": ["rbind", "rw"]},
    ]}


def figures(output: str, mib: int, files: int) -> dict[str, float]:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            a, b, c, d, e = (float(v) for v in line.split()[1:6])
            listed = int(line.split()[6])
            if listed < files:
                raise SystemExit(f"the walk listed {listed} lines for {files} files")

            def rate(seconds: float) -> float:
                return mib / max(seconds, 0.01)

            return {"read_cold_mib_s": rate(b - a), "read_again_mib_s": rate(c - b),
                    "write_mib_s": rate(d - c), "walk_files_s": files / max(e - d, 0.01)}
    raise SystemExit(f"no RESULT line in the container's output: {output[-500:]!r}")


def run_cocoon(place: Place, bundle: Path, cid: str, env: dict[str, str]) -> str:
    result = subprocess.run(place.cocoon("run", "--bundle", str(bundle), cid),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=place.env(**env), timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"cocoon run failed ({result.returncode}): {result.stderr[-800:]}")
    return result.stdout


def run_runc(work: Path, bundle: Path, cid: str) -> str:
    proc = subprocess.run(["runc", "--root", str(work / "runc"), "run", "--bundle", str(bundle),
                           cid], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600, check=False)
    subprocess.run(["runc", "--root", str(work / "runc"), "delete", "--force", cid],
                   capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"runc run failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def tuning_env(tuning: str) -> dict[str, str]:
    cache, threads, writeback = [*tuning.split(","), "0", "0"][:3]
    return {"COCOON_VIRTIOFS_CACHE": cache, "COCOON_VIRTIOFS_THREADS": threads,
            "COCOON_VIRTIOFS_WRITEBACK": writeback}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tuning", action="append",
                        help="CACHE,THREADS,WRITEBACK for virtiofsd (default: auto,0,0)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/share.py: run as root (VMs, runc)", file=sys.stderr)
        return 1
    tunings = args.tuning or ["auto,0,0"]
    place = Place.make("csb-")
    report: dict[str, dict[str, float]] = {}
    try:
        data = place.base / "data"
        make_data(data, args.mib, args.files)
        script = SCRIPT.replace("MIB", str(args.mib))
        bundle = busybox_bundle(place.bundles / "share", ["sh", "-c", script], **spec(data,
                                                                                   args.mib))
        runs: dict[str, list[dict[str, float]]] = {}
        for run in range(args.runs):
            runs.setdefault("runc", []).append(
                figures(run_runc(place.base, bundle, f"share-runc-{run}"), args.mib, args.files))
            for tuning in tunings:
                output = run_cocoon(place, bundle, f"share-{run}", tuning_env(tuning))
                runs.setdefault(f"cocoon {tuning}", []).append(
                    figures(output, args.mib, args.files))
        for name, samples in runs.items():
            report[name] = {phase: statistics.median(s[phase] for s in samples)
                            for phase in PHASES}
    finally:
        place.cleanup()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.mib} MB file, {args.files}-file tree, median of {args.runs}; "
          "cocoon rows: virtiofsd cache,threads,writeback")
    print(f"{'runtime':22} {'read cold MiB/s':>16} {'read again':>11} {'write MiB/s':>12} "
          f"{'walk files/s':>13}")
    for name, row in report.items():
        print(f"{name:22} {row['read_cold_mib_s']:16.0f} {row['read_again_mib_s']:11.0f} "
              f"{row['write_mib_s']:12.0f} {row['walk_files_s']:13.0f}")
    return 0


if __name__ == "__main__":
    shutil.which("runc") or sys.exit("bench/share.py: runc not installed")
    sys.exit(main())
