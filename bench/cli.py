#!/usr/bin/env python3
"""`cocoon state` and `cocoon exec ... true` against runc's, measured in the same run.

One busybox container sleeps under each runtime (`cocoon run -d` boots its VM, `runc run -d`
starts it on the host), from two copies of one bundle and private state roots; then each of
the four commands runs `--runs` times, interleaved (cocoon state, runc state, cocoon exec, runc
exec, then again, so a change in the host's load touches all alike), each timed from spawning
the command to its exit as an engine sees it, after a pause of 0.3 s (under TCG the guest goes on
working for a moment after an `exec`, and its CPU time is not the next command's). One untimed
run of each comes first (page cache, .pyc files). Reported: medians, and cocoon's median over
runc's.

- state: `state ID`, the runtime-spec state JSON (engines call it many times per container);
- exec: `exec ID true`, a process started in the running container and waited for (through
  the sandbox monitor and the guest agent for cocoon).

Both containers are deleted (`delete --force`) whatever happens.

Run: .venv/bin/python bench/cli.py [--runs 20] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
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

from benchlib import stop_leftovers

from cocoon.guest import assets
from cocoon.oci.default import default_spec

COCOON = str(Path(sys.executable).with_name("cocoon"))
RUNC = shutil.which("runc") or "runc"
CONTAINER = "bench-cli"
START_TIMEOUT = 600.0  # `cocoon run -d` may build the guest image or a VM template first
VERB_TIMEOUT = 60.0
SETTLE = 0.3  # seconds between timed commands


@dataclass
class Runtime:
    """One runtime's command line, with its private state root and bundle."""

    name: str
    argv: list[str]  # the runtime and its global flags
    bundle: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def run(self, *args: str, timeout: float = VERB_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run with files for stdio: a detached container keeps the caller's stdio (the
        runtime's shim or runc's container process), so a pipe would never reach its end."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(self.command(*args), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=err, env=self.env, timeout=timeout, check=False)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(),
                                                 err.read())
        if check and result.returncode != 0:
            raise SystemExit(f"{self.name} {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.strip()[-1000:]}")
        return result

    def timed(self, *args: str) -> float:
        """Seconds from spawning the command to its exit (stdio to /dev/null)."""
        started = time.perf_counter()
        code = subprocess.call(self.command(*args), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=self.env, timeout=VERB_TIMEOUT)
        elapsed = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"{self.name} {' '.join(args)} failed ({code})")
        return elapsed


def write_bundle(bundle: Path, rootfs: Path) -> None:
    """A busybox bundle whose process sleeps, without a terminal."""
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "100000"]
    # runc applies rlimits on the host, where this kind of sandbox caps them
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                                  {"type": "RLIMIT_NPROC", "hard": 1024, "soft": 1024}]
    (bundle / "config.json").write_text(json.dumps(spec))


def start(runtime: Runtime) -> None:
    runtime.run("run", "--detach", "--bundle", str(runtime.bundle), CONTAINER,
                timeout=START_TIMEOUT)
    state = json.loads(runtime.run("state", CONTAINER).stdout)
    if state.get("status") != "running":
        raise SystemExit(f"{runtime.name}: the container is {state.get('status')}, "
                         "not running")


def delete(runtime: Runtime) -> None:
    with contextlib.suppress(subprocess.SubprocessError, SystemExit, OSError):
        runtime.run("delete", "--force", CONTAINER, timeout=VERB_TIMEOUT, check=False)


VERBS: dict[str, tuple[str, ...]] = {
    "state": ("state", CONTAINER),
    "exec true": ("exec", CONTAINER, "true"),
}


def measure(runs: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="cbc", dir="/tmp"))
    vm_root = base / "vm"
    rootfs = assets.ensure_busybox_rootfs()
    cocoon = Runtime("cocoon", [COCOON, "--root", str(base / "cocoon-state")],
                     base / "cocoon-bundle", {**os.environ, "COCOON_VM_DIR": str(vm_root)})
    runc = Runtime("runc", [RUNC, "--root", str(base / "runc-state")], base / "runc-bundle",
                   dict(os.environ))
    runtimes = (cocoon, runc)
    samples: dict[str, dict[str, list[float]]] = {
        verb: {r.name: [] for r in runtimes} for verb in VERBS}
    try:
        for runtime in runtimes:
            runtime.bundle.mkdir(parents=True)
            write_bundle(runtime.bundle, rootfs)
        for runtime in runtimes:
            start(runtime)
        for verb_args in VERBS.values():  # warm-up, untimed
            for runtime in runtimes:
                runtime.timed(*verb_args)
        for _ in range(runs):
            for verb, verb_args in VERBS.items():
                for runtime in runtimes:
                    time.sleep(SETTLE)  # the previous command's guest work is not this one's
                    samples[verb][runtime.name].append(runtime.timed(*verb_args))
    finally:
        for runtime in runtimes:
            delete(runtime)
        stop_leftovers(vm_root)
        shutil.rmtree(base, ignore_errors=True)
    runc_version = subprocess.run([RUNC, "--version"], capture_output=True, text=True,
                                  check=False).stdout.splitlines()
    result: dict[str, Any] = {"runs": runs, "runc": runc_version[0] if runc_version else "",
                              "verbs": {}}
    for verb, by_runtime in samples.items():
        cocoon_median = statistics.median(by_runtime["cocoon"])
        runc_median = statistics.median(by_runtime["runc"])
        result["verbs"][verb] = {
            "cocoon_s": round(cocoon_median, 4), "runc_s": round(runc_median, 4),
            "ratio": round(cocoon_median / runc_median, 1),
            "cocoon_all_s": [round(x, 4) for x in by_runtime["cocoon"]],
            "runc_all_s": [round(x, 4) for x in by_runtime["runc"]],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    result = measure(args.runs)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"medians of {result['runs']} interleaved runs; {result['runc']}")
    print(f"{'command':<14}{'cocoon':>10}{'runc':>10}{'cocoon/runc':>13}{'cocoon min':>12}")
    for verb, figures in result["verbs"].items():
        print(f"{verb:<14}{figures['cocoon_s'] * 1000:>8.1f}ms{figures['runc_s'] * 1000:>8.1f}ms"
              f"{figures['ratio']:>12.1f}x{min(figures['cocoon_all_s']) * 1000:>10.1f}ms")


if __name__ == "__main__":
    main()
