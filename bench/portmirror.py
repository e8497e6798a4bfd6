#!/usr/bin/env python3
"""The port mirror's throughput and latency: a host-network container's port on the host.

A container with no network namespace runs busybox httpd on the guest's 127.0.0.1 with a file
of `--mib` MiB; the host fetches it (guest to host) and a small file (one GET: connect, request,
answer, close) through 127.0.0.1:PORT, where the sandbox monitor mirrors the port and carries
each connection over the agent channel (docs/design.md, "Ports").

Run: .venv/bin/python bench/portmirror.py [--mib 32] [--runs 3] [--gets 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from cocoon.guest import assets
from cocoon.oci.default import default_spec

COCOON = str(Path(sys.executable).parent / "cocoon")


def cocoon(root: Path, *args: str) -> None:
    subprocess.run([COCOON, "--root", str(root), *args], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def bundle(path: Path, args: list[str]) -> Path:
    path.mkdir(parents=True)
    shutil.copytree(assets.ensure_busybox_rootfs(), path / "rootfs", symlinks=True)
    spec: dict[str, Any] = default_spec()
    spec["process"].update(terminal=False, args=args)
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                   if ns["type"] != "network"]
    (path / "config.json").write_text(json.dumps(spec))
    return path


def fetch(url: str, timeout: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body: bytes = response.read()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gets", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="cocoon-bench-pm-"))
    root = work / "root"
    script = (f"mkdir -p /tmp/www && echo hi > /tmp/www/small && dd if=/dev/zero "
              f"of=/tmp/www/big bs=1048576 count={args.mib} 2>/dev/null && "
              f"exec httpd -f -p 127.0.0.1:{port} -h /tmp/www")
    try:
        cocoon(root, "run", "--detach", "--bundle", str(bundle(work / "b", ["sh", "-c", script])),
               "pm")
        started = time.monotonic()
        fetch(f"http://127.0.0.1:{port}/small")
        first = time.monotonic() - started
        gets = []
        for _ in range(args.gets):
            t = time.monotonic()
            fetch(f"http://127.0.0.1:{port}/small")
            gets.append(time.monotonic() - t)
        rates = []
        for _ in range(args.runs):
            t = time.monotonic()
            size = len(fetch(f"http://127.0.0.1:{port}/big"))
            rates.append(size / (time.monotonic() - t) / 2**20)
        result = {"first_get_s": round(first, 3),
                  "get_ms": round(statistics.median(gets) * 1000, 1),
                  "guest_to_host_mib_s": round(statistics.median(rates), 1)}
    finally:
        subprocess.run([COCOON, "--root", str(root), "delete", "--force", "pm"],
                       stdin=subprocess.DEVNULL, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"first GET after run --detach returned: {result['first_get_s']} s")
        print(f"small GET through the mirror: {result['get_ms']} ms (median)")
        print(f"{args.mib} MiB guest to host: {result['guest_to_host_mib_s']} MiB/s (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
