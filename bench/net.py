#!/usr/bin/env python3
"""Network throughput and latency of a container in a CNI-style namespace: Cocoon against runc.

Both runtimes get the same kind of namespace (a veth with 10.250.0.2/24 inside; its peer with
10.250.0.1/24 in a second namespace playing the host, where the client runs) and the same
busybox bundle naming it in `linux.namespaces`. The container serves four ports with busybox
nc: a sink (host -> container), two sources (container -> host) and an echo (round trips of one
byte). The sources differ in how the bytes reach the socket: "relay" is `dd | nc`, nc copying
the pipe to the socket 1 KiB per read and write (each KiB costs the guest two context switches
and two system calls, which dominate under TCG); "direct" is `nc -e dd`, dd writing 64 KiB at a
time straight into the socket, so the figure is the network path's own. Each producer is also
timed over the container's own loopback (to a `dd` reading the socket directly), in the same
run: that is the most the producer can send anywhere. Each figure is the median of `--runs`
transfers of `--mib` MiB, or of `--trips` round trips, measured from the host side (loopback:
inside the container, to 10 ms).

Run: .venv/bin/python bench/net.py [--mib 32] [--runs 3] [--trips 500] [--json]
"""


from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cocoon.guest import assets
from cocoon.network.netns import run_in_netns
from cocoon.oci.default import default_spec

COCOON = str(Path(sys.executable).parent / "cocoon")
GUEST_IP, HOST_IP = "10.250.0.2", "10.250.0.1"
SINK, SOURCE, ECHO, DIRECT = 7001, 7002, 7003, 7004
LOOPBACK_PORT = 7005
LOOPBACK_TIMEOUT = 300  # seconds the receiver waits: a sender that failed must not hang exec
CHUNK = 1 << 16


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str]]:
    """(container netns path, host netns path), joined by a veth as a CNI bridge plugin would."""
    token = secrets.token_hex(3)
    inner, outer = f"ccb-{token}", f"ccb-{token}-h"
    ip("netns", "add", inner)
    ip("netns", "add", outer)
    try:
        ip("-n", outer, "link", "set", "lo", "up")
        ip("-n", inner, "link", "set", "lo", "up")  # as CNI's loopback plugin does
        ip("link", "add", "eth0", "netns", inner, "type", "veth", "peer", "name", f"vb{token}",
           "netns", outer)
        ip("-n", inner, "addr", "add", f"{GUEST_IP}/24", "dev", "eth0")
        ip("-n", inner, "link", "set", "eth0", "up")
        ip("-n", outer, "addr", "add", f"{HOST_IP}/24", "dev", f"vb{token}")
        ip("-n", outer, "link", "set", f"vb{token}", "up")
        yield f"/var/run/netns/{inner}", f"/run/netns/{outer}"
    finally:
        for name in (inner, outer):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def bundle(path: Path, netns: str, mib: int) -> Path:
    shutil.copytree(assets.ensure_busybox_rootfs(), path / "rootfs", symlinks=True)
    spec: dict[str, Any] = default_spec()
    blocks = mib * (1 << 20) // CHUNK
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sh", "-c", " ".join([
        f"(while true; do nc -l -p {SINK} > /dev/null; done) &",
        f"(while true; do dd if=/dev/zero bs={CHUNK} count={blocks} 2>/dev/null"
        f" | nc -l -p {SOURCE}; done) &",
        f"(while true; do nc -l -p {DIRECT} -e dd if=/dev/zero bs={CHUNK} count={blocks}"
        " 2>/dev/null; done) &",
        f"while true; do nc -l -p {ECHO} -e cat; done"])]
    spec["root"] = {"path": "rootfs", "readonly": False}
    for namespace in spec["linux"]["namespaces"]:
        if namespace["type"] == "network":
            namespace["path"] = netns
    (path / "config.json").write_text(json.dumps(spec))
    return path


def connect(host_ns: str, port: int, timeout: float = 60.0) -> socket.socket:
    """A connection from the host namespace; retried while the server (re)starts listening."""
    deadline = time.monotonic() + timeout
    while True:
        sock = run_in_netns(host_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(timeout)
        try:
            sock.connect((GUEST_IP, port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def upload(host_ns: str, size: int) -> float:
    """MiB/s host -> container: until the container has read everything and closed."""
    block = os.urandom(CHUNK)
    with connect(host_ns, SINK) as sock:
        started = time.monotonic()
        for _ in range(size // CHUNK):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(CHUNK):
            pass
        return size / (1 << 20) / (time.monotonic() - started)


def download(host_ns: str, size: int, port: int = SOURCE) -> float:
    """MiB/s container -> host, from the source on `port`."""
    with connect(host_ns, port) as sock:
        started = time.monotonic()
        total = 0
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
        seconds = time.monotonic() - started
    if total != size:
        raise RuntimeError(f"received {total} bytes of {size}")
    return size / (1 << 20) / seconds


def round_trips(host_ns: str, trips: int) -> float:
    """Median microseconds for one byte to the container's echo and back."""
    with connect(host_ns, ECHO) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(trips + 10):
            started = time.perf_counter()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise RuntimeError("the echo answered something else")
            samples.append(time.perf_counter() - started)
    return statistics.median(samples[10:]) * 1e6


def loopback_command(size: int, direct: bool) -> str:
    """A shell command for the container: send `size` bytes with the relay or the direct
    producer to a dd reading a socket on 127.0.0.1; print the start and end uptimes and dd's
    report (busybox's dd counts records only: full blocks of CHUNK, so `size` must be a
    multiple of it)."""
    blocks = size // CHUNK
    sender = (f"nc 127.0.0.1 {LOOPBACK_PORT} -e dd if=/dev/zero bs={CHUNK} count={blocks}"
              if direct else
              f"dd if=/dev/zero bs={CHUNK} count={blocks} | nc 127.0.0.1 {LOOPBACK_PORT}")
    return (f"timeout {LOOPBACK_TIMEOUT} nc -l -p {LOOPBACK_PORT} -e dd of=/dev/null bs={CHUNK}"
            " iflag=fullblock"
            " 2>/tmp/loopback.out &"
            " sleep 1; a=$(cat /proc/uptime);"
            f" {sender} 2>/dev/null; wait; b=$(cat /proc/uptime);"
            " echo $a $b; cat /tmp/loopback.out; rm -f /tmp/loopback.out")


def loopback_rate(output: str, size: int) -> float:
    """MiB/s from `loopback_command`'s output; the receiver must have had every byte."""
    fields = output.split()
    records = fields[4] if len(fields) > 4 else ""
    received = int(records.partition("+")[0]) * CHUNK if records.endswith("+0") else -1
    if received != size:
        raise RuntimeError(f"loopback: received {received} bytes of {size}: {output!r}")
    seconds = max(float(fields[2]) - float(fields[0]), 0.01)
    return size / (1 << 20) / seconds


class Runtime:
    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work

    def start(self, bundle_dir: Path, cid: str) -> None:
        raise NotImplementedError

    def stop(self, cid: str) -> None:
        raise NotImplementedError

    def exec(self, cid: str, command: str) -> str:
        raise NotImplementedError

    def _output(self, argv: list[str]) -> str:
        with open(self.work / f"{self.name}.log", "a") as log:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=log, check=True, timeout=600, text=True).stdout

    def _run(self, argv: list[str]) -> None:
        with open(self.work / f"{self.name}.log", "a") as log:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
                           timeout=300)


class Cocoon(Runtime):
    name = "cocoon"

    def start(self, bundle_dir: Path, cid: str) -> None:
        self._run([COCOON, "--root", str(self.work / "state"), "run", "--detach", "--bundle",
                   str(bundle_dir), cid])

    def stop(self, cid: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([COCOON, "--root", str(self.work / "state"), "delete", "--force", cid])

    def exec(self, cid: str, command: str) -> str:
        return self._output([COCOON, "--root", str(self.work / "state"), "exec", cid, "sh", "-c",
                             command])


class Runc(Runtime):
    name = "runc"

    def start(self, bundle_dir: Path, cid: str) -> None:
        self._run(["runc", "--root", str(self.work / "runc"), "run", "--detach", "--bundle",
                   str(bundle_dir), cid])

    def stop(self, cid: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(["runc", "--root", str(self.work / "runc"), "delete", "--force", cid])

    def exec(self, cid: str, command: str) -> str:
        return self._output(["runc", "--root", str(self.work / "runc"), "exec", cid, "sh", "-c",
                             command])


def measure(runtime: Runtime, mib: int, runs: int, trips: int) -> dict[str, float]:
    size = mib * (1 << 20)
    with namespaces() as (netns, host_ns):
        cid = f"bench-{runtime.name}"
        runtime.start(bundle(runtime.work / cid, netns, mib), cid)
        try:
            results: dict[str, list[float]] = {key: [] for key in FIGURES}
            for _ in range(runs):
                results["host_to_container_mib_s"].append(upload(host_ns, size))
                results["container_to_host_mib_s"].append(download(host_ns, size))
                results["container_to_host_direct_mib_s"].append(
                    download(host_ns, size, DIRECT))
                for direct, key in ((False, "loopback_mib_s"), (True, "loopback_direct_mib_s")):
                    output = runtime.exec(cid, loopback_command(size, direct))
                    results[key].append(loopback_rate(output, size))
                results["tcp_round_trip_us"].append(round_trips(host_ns, trips))
        finally:
            runtime.stop(cid)
    return {key: statistics.median(values) for key, values in results.items()}


# key, column heading, format
FIGURES: dict[str, tuple[str, str]] = {
    "host_to_container_mib_s": ("host->ctr", ".1f"),
    "container_to_host_mib_s": ("ctr->host relay", ".1f"),
    "loopback_mib_s": ("loopback relay", ".1f"),
    "container_to_host_direct_mib_s": ("ctr->host direct", ".1f"),
    "loopback_direct_mib_s": ("loopback direct", ".1f"),
    "tcp_round_trip_us": ("TCP RTT us", ".0f"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trips", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/net.py: run as root (network namespaces, VMs)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="cnb-", dir="/tmp"))
    # a private VM root: test suites running beside the bench clean what appears in the shared one
    os.environ["COCOON_VM_DIR"] = str(work / "vm")
    makers: list[Callable[[Path], Runtime]] = [Cocoon, Runc]
    report: dict[str, dict[str, float]] = {}
    try:
        for make in makers:
            runtime = make(work)
            report[runtime.name] = measure(runtime, args.mib, args.runs, args.trips)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.mib} MiB per transfer, MiB/s, median of {args.runs}; round trip: median of "
          f"{args.trips} one-byte TCP echoes")
    print(f"{'runtime':8} " + " ".join(f"{head:>16}" for head, _ in FIGURES.values()))
    for name, figures in report.items():
        print(f"{name:8} " + " ".join(f"{figures[key]:16{form}}"
                                      for key, (_, form) in FIGURES.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
