#!/usr/bin/env python3
"""`cocoon run` from the caller's side: a cold run against the bare-QEMU floor, and stdio MB/s.

Measured in one run (floor and cold runs alternate, `--runs` times each, medians reported, so
a change in the host's load touches both alike):

- floor: QEMU with the same kernel and settings booting `ensure_floor_initrd()` (busybox prints
  a marker and powers off), from spawning QEMU to its exit;
- cold run: `cocoon run` of `true` in a busybox bundle, from spawning the command to its exit:
  CLI start, VM boot, container, teardown; and its ratio to the floor;
- stdout: `cocoon run` of `dd if=/dev/zero bs=1M count=N`, bytes over the time from the first
  byte to the end of the stream (the boot is not counted; busybox `head` is no producer here:
  it manages about 11 MB/s under TCG on its own, dd about 100 MB/s);
- stdin: `cocoon run` of `sh -c 'echo ready; wc -c'`: N bytes written once the container said
  ready, over the time until `wc` reports the count (so all of it reached the container);
  busybox `wc` is a slow reader under TCG, so the same with `cat > /dev/null` (until it says
  done) and, beside them, `dd | wc -c` inside the container (what `wc` reads at on its own).

Run: .venv/bin/python bench/run.py [--runs 3] [--stdout-mib 200] [--stdin-mb 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import floor_seconds, stop_leftovers

from cocoon.guest import assets
from cocoon.hypervisor import accel
from cocoon.oci.default import default_spec

MB = 1_000_000
TIMEOUT = 300.0
COCOON = str(Path(sys.executable).with_name("cocoon"))


@dataclass
class Place:
    """A private state root and VM root, so nothing of ours mixes with other runs."""

    root: Path
    vm_root: Path
    bundle: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "COCOON_VM_DIR": str(self.vm_root)}

    def command(self, container_id: str) -> list[str]:
        return [COCOON, "--root", str(self.root), "run", "--bundle", str(self.bundle),
                container_id]

    def set_args(self, args: list[str]) -> None:
        spec = default_spec()
        spec["process"]["terminal"] = False
        spec["process"]["args"] = args
        (self.bundle / "config.json").write_text(json.dumps(spec))


@contextlib.contextmanager
def running(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """A `cocoon run` child that is killed and reaped if the measurement fails part way
    (its runtime then tears the VM down; `stop_leftovers` catches what it could not)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def cold_run_seconds(place: Place, container_id: str) -> float:
    place.set_args(["true"])
    started = time.monotonic()
    result = subprocess.run(place.command(container_id), env=place.env(), timeout=TIMEOUT,
                            stdin=subprocess.DEVNULL, capture_output=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"cocoon run true failed ({result.returncode}): "
                         f"{result.stderr.decode(errors='replace').strip()}")
    return elapsed


def stdout_rate(place: Place, size: int) -> tuple[int, float]:
    """Bytes received and seconds from the first byte to the end of the stream."""
    place.set_args(["dd", "if=/dev/zero", "bs=1M", f"count={size // (1 << 20)}"])
    with running(subprocess.Popen(place.command("bench-out"), env=place.env(),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)) as proc:
        assert proc.stdout is not None
        received = 0
        first = last = 0.0
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            if not received:
                first = time.monotonic()
            received += len(chunk)
            last = time.monotonic()
        _, err = proc.communicate(timeout=TIMEOUT)
    if proc.returncode != 0 or received != size // (1 << 20) * (1 << 20):
        raise SystemExit(f"stdout run failed ({proc.returncode}, {received} of {size} bytes): "
                         f"{err.decode(errors='replace').strip()}")
    return received, last - first


READERS = {  # the container's stdin reader, and what it prints at the end
    "wc": ("wc -c", None),
    "cat": ("cat > /dev/null; echo done", b"done"),
}


def stdin_rate(place: Place, size: int, reader: str = "wc") -> tuple[int, float]:
    """Bytes sent and seconds from the first write to the container's last line (its count
    of them for `wc`, `done` once `cat` has read to the end)."""
    script, last = READERS[reader]
    place.set_args(["sh", "-c", f"echo ready; {script}"])
    with running(subprocess.Popen(place.command("bench-in"), env=place.env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        out_fd = proc.stdout.fileno()
        if _read_line(out_fd) != b"ready\n":
            raise SystemExit("stdin run: the container did not say ready")
        block = b"x" * (1 << 20)
        started = time.monotonic()
        sent = 0
        while sent < size:
            piece = block[:size - sent]
            proc.stdin.write(piece)
            sent += len(piece)
        proc.stdin.close()
        proc.stdin = None  # closed: communicate() must not flush it
        count = _read_line(out_fd)
        elapsed = time.monotonic() - started
        _, err = proc.communicate(timeout=TIMEOUT)
    if proc.returncode != 0 or count.strip() != (last or str(size).encode()):
        raise SystemExit(f"stdin run failed ({proc.returncode}, count {count!r}): "
                         f"{err.decode(errors='replace').strip()}")
    return sent, elapsed


def guest_wc_rate(place: Place, size: int) -> float:
    """MB/s of `dd | wc -c` inside the container: what `wc` itself reads at."""
    blocks = size // (64 << 10)
    place.set_args(["sh", "-c", "a=$(cut -d' ' -f1 /proc/uptime); "
                    f"dd if=/dev/zero bs=64k count={blocks} 2>/dev/null | wc -c >/dev/null; "
                    "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"])
    result = subprocess.run(place.command("bench-wc"), env=place.env(), timeout=TIMEOUT,
                            stdin=subprocess.DEVNULL, capture_output=True, check=False)
    try:
        began, ended = (float(x) for x in result.stdout.split())
    except ValueError:
        raise SystemExit(f"in-guest wc run failed ({result.returncode}): "
                         f"{result.stderr.decode(errors='replace').strip()}") from None
    return blocks * (64 << 10) / MB / max(ended - began, 0.01)


def _read_line(fd: int) -> bytes:
    line = b""
    deadline = time.monotonic() + TIMEOUT
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise SystemExit(f"no line from the container within {TIMEOUT:.0f} s")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


def measure(args: argparse.Namespace) -> dict[str, Any]:
    decision = asyncio.run(accel.choose_accel_async())
    base = Path(tempfile.mkdtemp(prefix="cbr", dir="/tmp"))
    place = Place(base / "state", base / "vm", base / "bundle")
    for path in (place.root, place.vm_root, place.bundle):
        path.mkdir()
    shutil.copytree(assets.ensure_busybox_rootfs(), place.bundle / "rootfs", symlinks=True)
    try:
        floors, colds = [], []
        for index in range(args.runs):
            floors.append(floor_seconds(base / "floor", decision))
            colds.append(cold_run_seconds(place, f"bench-true-{index}"))
        out_bytes, out_seconds = stdout_rate(place, args.stdout_mib << 20)
        in_bytes, in_seconds = stdin_rate(place, args.stdin_mb * MB)
        cat_bytes, cat_seconds = stdin_rate(place, args.stdin_mb * MB, "cat")
        wc_guest = guest_wc_rate(place, args.stdin_mb * MB)
    finally:
        stop_leftovers(place.vm_root)
        shutil.rmtree(base, ignore_errors=True)
    floor, cold = statistics.median(floors), statistics.median(colds)
    return {
        "accel": decision.accel, "runs": args.runs,
        "floor_s": round(floor, 3), "floor_all_s": [round(x, 3) for x in floors],
        "cold_run_true_s": round(cold, 3), "cold_all_s": [round(x, 3) for x in colds],
        "ratio": round(cold / floor, 2),
        "stdout_mb": round(out_bytes / MB, 1), "stdout_s": round(out_seconds, 3),
        "stdout_mb_per_s": round(out_bytes / MB / out_seconds, 1),
        "stdin_mb": in_bytes / MB, "stdin_s": round(in_seconds, 3),
        "stdin_mb_per_s": round(in_bytes / MB / in_seconds, 1),
        "stdin_cat_mb_per_s": round(cat_bytes / MB / cat_seconds, 1),
        "guest_wc_mb_per_s": round(wc_guest, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stdout-mib", type=int, default=200)
    parser.add_argument("--stdin-mb", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"accel {result['accel']}, medians of {result['runs']} alternating runs")
    print(f"floor (QEMU + kernel + floor initrd to power-off): {result['floor_s']:.2f} s "
          f"{result['floor_all_s']}")
    print(f"cold `cocoon run` of true:                         {result['cold_run_true_s']:.2f} s "
          f"{result['cold_all_s']}")
    print(f"ratio cold run / floor:                            {result['ratio']:.2f}x")
    print(f"stdout: {result['stdout_mb']:.0f} MB in {result['stdout_s']:.2f} s = "
          f"{result['stdout_mb_per_s']} MB/s")
    print(f"stdin:  {result['stdin_mb']:.0f} MB in {result['stdin_s']:.2f} s = "
          f"{result['stdin_mb_per_s']} MB/s (`wc -c` reads; in the guest `dd | wc -c` "
          f"{result['guest_wc_mb_per_s']} MB/s)")
    print(f"stdin, `cat > /dev/null` reads: {result['stdin_cat_mb_per_s']} MB/s")


if __name__ == "__main__":
    main()
