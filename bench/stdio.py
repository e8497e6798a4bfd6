#!/usr/bin/env python3
"""Container stdout throughput: `cocoon exec` and `cocoon run` in the foreground against runc.

The producer is busybox `dd if=/dev/zero bs=1M count=N` (`--mb`, 300) writing to its stdout;
the bench reads the command's stdout as it arrives and counts the bytes. Each figure is the
median of `--runs` (3) transfers, in MB/s (10^6 bytes), from the first byte on the host to end of
file (start-up is not in it; the whole command's time is reported beside it).

Baselines of the same run:
- cocoon exec with COCOON_STDIO_PORTS=0: every byte through the agent's ReadStdout, as before
  the stdio ports (runc ignores the variable);
- in the guest: the same `dd` piped to `cat > /dev/null` inside the container (`cocoon exec`),
  timed inside with /proc/uptime (10 ms steps): what the producer achieves through a pipe to a
  reader in the guest, the issue's target (stdout at least 80% of it);
- runc: the same commands, `runc exec` and `runc run`, from a copy of the same busybox bundle.

Run: .venv/bin/python bench/stdio.py [--mb 300] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Place, busybox_bundle

CHUNK = 1 << 20
RUNC = shutil.which("runc") or "runc"
MB = 1_000_000
INSIDE = ("a=$(cut -d' ' -f1 /proc/uptime); {dd} 2>/dev/null | cat > /dev/null; "
          "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b")


def read_stdout(argv: list[str], env: dict[str, str], expect: int) -> tuple[float, float]:
    """Run `argv`, drain its stdout; (MB/s from the first byte to EOF, whole seconds)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, env=env)
        assert proc.stdout is not None
        received, first = 0, None
        while chunk := os.read(proc.stdout.fileno(), CHUNK):
            first = first or time.perf_counter()
            received += len(chunk)
        ended = time.perf_counter()
        status = proc.wait()
        err.seek(0)
        if status != 0 or received != expect:
            raise SystemExit(f"{' '.join(argv[-6:])}: exit {status}, {received} of {expect} "
                             f"bytes: {err.read().strip()[-500:]}")
    return expect / (ended - (first or started)) / MB, time.perf_counter() - started


def uptime_rate(text: str, size: int) -> float:
    """MB/s from two /proc/uptime readings taken around the pipe (busybox dd prints no rate)."""
    match = re.fullmatch(r"\s*([0-9.]+) ([0-9.]+)\s*", text)
    if match is None:
        raise SystemExit(f"no uptime readings in {text[-300:]!r}")
    return size / max(float(match.group(2)) - float(match.group(1)), 0.01) / MB


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure(prefix: list[str], env: dict[str, str], bundle: Path, cid: str, mb: int,
            runs: int) -> dict[str, Any]:
    dd = ["dd", "if=/dev/zero", "bs=1M", f"count={mb}"]
    size = mb * (1 << 20)
    subprocess.run([*prefix, "run", "--detach", "--bundle", str(bundle), cid], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, timeout=900)
    try:
        execs = [read_stdout([*prefix, "exec", cid, *dd], env, size) for _ in range(runs)]
        # the same exec with every byte through ReadStdout, as before the stdio ports
        agent_path = [read_stdout([*prefix, "exec", cid, *dd],
                                  {**env, "COCOON_STDIO_PORTS": "0"}, size)
                      for _ in range(runs)]
        inside = []
        for _ in range(runs):
            result = subprocess.run(
                [*prefix, "exec", cid, "sh", "-c", INSIDE.format(dd=" ".join(dd))],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                timeout=600, check=True)
            inside.append(uptime_rate(result.stdout, size))
    finally:
        subprocess.run([*prefix, "delete", "--force", cid], env=env, capture_output=True,
                       timeout=300, check=False)
    dd_bundle = bundle.parent / f"{bundle.name}-dd"
    if not dd_bundle.exists():
        shutil.copytree(bundle, dd_bundle, symlinks=True)
        spec = json.loads((dd_bundle / "config.json").read_text())
        spec["process"]["args"] = dd
        (dd_bundle / "config.json").write_text(json.dumps(spec))
    runs_ = []
    for index in range(runs):
        runs_.append(read_stdout([*prefix, "run", "--bundle", str(dd_bundle),
                                  f"{cid}-run{index}"], env, size))
    return {"exec_mb_per_s": median([r for r, _ in execs]),
            "exec_seconds": median([s for _, s in execs]),
            "exec_readstdout_mb_per_s": median([r for r, _ in agent_path]),
            "run_mb_per_s": median([r for r, _ in runs_]),
            "run_seconds": median([s for _, s in runs_]),
            "pipe_in_container_mb_per_s": median(inside)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    place = Place.make("cstdio-")
    report: dict[str, Any] = {"mb": args.mb, "runs": args.runs}
    try:
        bundle = busybox_bundle(place.bundles / "sleeper", ["sleep", "100000"])
        report["cocoon"] = measure(place.cocoon(), place.env(), bundle, "stdio", args.mb,
                                   args.runs)
        runc_bundle = busybox_bundle(place.bundles / "runc", ["sleep", "100000"])
        report["runc"] = measure([RUNC, "--root", str(place.base / "runc-state")],
                                 dict(os.environ), runc_bundle, "stdio", args.mb, args.runs)
    finally:
        place.cleanup()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name in ("cocoon", "runc"):
        r = report[name]
        print(f"{name}: {args.mb} MiB of dd stdout, median of {args.runs}: exec "
              f"{r['exec_mb_per_s']} MB/s ({r['exec_seconds']} s in all; "
              f"{r['exec_readstdout_mb_per_s']} MB/s with COCOON_STDIO_PORTS=0), run "
              f"{r['run_mb_per_s']} MB/s ({r['run_seconds']} s in all); the same dd piped to "
              f"cat in the container: {r['pipe_in_container_mb_per_s']} MB/s")
    cocoon = report["cocoon"]
    print(f"cocoon exec stdout / in-guest pipe: "
          f"{cocoon['exec_mb_per_s'] / cocoon['pipe_in_container_mb_per_s']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
