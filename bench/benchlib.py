"""What the benchmarks share: private roots, the bare-QEMU floor, busybox bundles, memory
readings from /proc, and the plots written beside the figures.

The benchmarks run as scripts (`.venv/bin/python bench/start.py`), so this module is imported
as `benchlib` from the script's own directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocoon.guest import assets
from cocoon.guest.floor import MARKER
from cocoon.hypervisor import accel
from cocoon.hypervisor.cmdline import build_command
from cocoon.hypervisor.config import VMConfig
from cocoon.oci.default import default_spec
from cocoon.sandbox.launcher import stop_sandbox
from cocoon.sandbox.layout import Layout

COCOON = str(Path(sys.executable).with_name("cocoon"))
TIMEOUT = 300.0
PLOTS = Path(__file__).resolve().parents[1] / "docs" / "img"


@dataclass
class Place:
    """Private state root, VM root and template directory, so that nothing of a benchmark's
    mixes with other runs; `env` is the environment its commands get."""

    base: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, prefix: str) -> Place:
        base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short socket paths
        place = cls(base)
        for path in (place.root, place.vm_root, place.bundles):
            path.mkdir()
        return place

    @property
    def root(self) -> Path:
        return self.base / "state"

    @property
    def vm_root(self) -> Path:
        return self.base / "vm"

    @property
    def templates(self) -> Path:
        return self.base / "templates"

    @property
    def bundles(self) -> Path:
        return self.base / "bundles"

    def env(self, **changes: str) -> dict[str, str]:
        return {**os.environ, "COCOON_VM_DIR": str(self.vm_root),
                "COCOON_TEMPLATE_DIR": str(self.templates), **self.extra_env, **changes}

    def cocoon(self, *args: str) -> list[str]:
        return [COCOON, "--root", str(self.root), *args]

    def run(self, *args: str, timeout: float = TIMEOUT, check: bool = True,
            **env: str) -> subprocess.CompletedProcess[str]:
        """A cocoon command with files for stdio (a detached container keeps them)."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(self.cocoon(*args), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=err, env=self.env(**env), timeout=timeout,
                                  check=False)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(),
                                                 err.read())
        if check and result.returncode != 0:
            raise SystemExit(f"cocoon {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.strip()[-1000:]}")
        return result

    def timed(self, *args: str, **env: str) -> float:
        """Seconds from spawning `cocoon ARGS` to its exit."""
        started = time.perf_counter()
        result = subprocess.run(self.cocoon(*args), stdin=subprocess.DEVNULL,
                                capture_output=True, env=self.env(**env), timeout=TIMEOUT,
                                check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"cocoon {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.decode(errors='replace').strip()[-1000:]}")
        return elapsed

    @contextlib.contextmanager
    def applied(self, **changes: str) -> Iterator[None]:
        """This place's environment in this process, for calls made here (not commands)."""
        saved = dict(os.environ)
        os.environ.update(self.env(**changes))
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def cleanup(self) -> None:
        """Stop every sandbox and pooled clone left in the VM root, then remove everything."""
        subprocess.run(self.cocoon("template", "rm"), env=self.env(), capture_output=True,
                       timeout=TIMEOUT, check=False)
        stop_leftovers(self.vm_root)
        shutil.rmtree(self.base, ignore_errors=True)


def stop_leftovers(vm_root: Path) -> None:
    """Stop any sandbox still in a VM root before its directories go."""
    for directory in sorted(vm_root.iterdir()) if vm_root.is_dir() else []:
        if directory.is_dir() and not directory.name.startswith("."):
            stop_sandbox(Layout(directory), grace=1.0)


def busybox_bundle(directory: Path, args: Sequence[str], **spec_fields: Any) -> Path:
    """A bundle running `args` from the cached busybox root, without a terminal."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(assets.ensure_busybox_rootfs(), directory / "rootfs", symlinks=True)
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec.update(spec_fields)
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


def floor_seconds(work: Path, decision: accel.AccelDecision) -> float:
    """The bare-QEMU floor: spawn-to-exit of QEMU booting the same kernel into the floor initrd
    (busybox prints a marker and powers off), with the settings sandboxes boot with."""
    work.mkdir(parents=True, exist_ok=True)
    vm = VMConfig(name="bench-floor", kernel=assets.ensure_kernel().vmlinuz,
                  initrd=assets.ensure_floor_initrd(), accel=decision.accel,
                  cpu_model=decision.cpu_model, qmp_socket=work / "qmp.sock",
                  console_log=work / "console.log")
    started = time.monotonic()
    proc = subprocess.Popen(build_command(vm), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    console = vm.console_log.read_text(errors="replace")
    shutil.rmtree(work, ignore_errors=True)
    if code != 0 or MARKER not in console:
        raise SystemExit(f"floor boot failed (exit {code}): {console[-500:]}")
    return elapsed


# --- memory ---------------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    """Proportional set size of a process (its shared pages divided among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def unmapped_memfd_kib(pid: int) -> int:
    """Memory in the process's memfds that no PSS counts: pages written into a clone's RAM
    copy that the guest has not touched since, resident but mapped by nobody."""
    total = 0
    mapped = 0
    seen: set[tuple[int, int]] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            info = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:") and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))  # QEMU may hold one memfd twice
            total += info.st_blocks // 2
    if not total:
        return 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            in_memfd = False
            for line in f:
                if "-" in line.split(" ", 1)[0] and ":" not in line.split(" ", 1)[0]:
                    in_memfd = "/memfd:" in line
                elif in_memfd and line.startswith("Rss:"):
                    mapped += int(line.split()[1])
    except OSError:
        return total
    return max(total - mapped, 0)


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def process_kind(pid: int) -> str | None:
    """`qemu`, `virtiofsd` or `monitor` for a sandbox's host processes (the shim is found by
    the pid its state records)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return None
    text = b" ".join(args)
    if args[0].endswith(b"qemu-system-x86_64"):
        return "qemu"
    if args[0].endswith(b"virtiofsd"):
        return "virtiofsd"
    if b"cocoon.sandbox.monitor" in text:
        return "monitor"
    return None


def children_of(pids: Iterable[int]) -> set[int]:
    wanted = set(pids)
    found = set(wanted)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent in wanted:
            found.add(int(entry))
    return found


# --- plots --------------------------------------------------------------------------------


def _pyplot() -> Any | None:
    """matplotlib's pyplot drawing to files, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def bar_plot(path: Path, title: str, labels: Sequence[str], values: Sequence[float],
             unit: str, reference: tuple[str, float] | None = None,
             target: tuple[str, float] | None = None) -> Path | None:
    """A bar chart as PNG (None when matplotlib is not installed)."""
    plt = _pyplot()
    if plt is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(labels, values, color="#4a7ab5")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(f"{value:.2f}" if value < 10 else f"{value:.0f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    for line, style in ((reference, "--"), (target, ":")):
        if line is not None:
            ax.axhline(line[1], linestyle=style, color="#b5504a" if style == "--" else "#3d8c40",
                       label=f"{line[0]} ({line[1]:.2f} {unit})")
    if reference or target:
        ax.legend(fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stacked_plot(path: Path, title: str, rows: dict[str, dict[str, float]], unit: str,
                 target: tuple[str, float] | None = None) -> Path | None:
    """Horizontal stacked bars, one per row, one segment per part (None without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = list(dict.fromkeys(part for row in rows.values() for part in row))
    fig, ax = plt.subplots(figsize=(8, 2.2 + 0.6 * len(rows)))
    labels = list(rows)
    left = [0.0] * len(rows)
    colors = ["#4a7ab5", "#8fb3de", "#e0a458", "#7bb57b", "#b56a8f", "#999999"]
    for index, part in enumerate(parts):
        widths = [rows[label].get(part, 0.0) for label in labels]
        ax.barh(labels, widths, left=left, label=part, color=colors[index % len(colors)])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, total in enumerate(left):
        ax.annotate(f"{total:.0f}", (total, y), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=9)
    if target is not None:
        ax.axvline(target[1], linestyle=":", color="#3d8c40",
                   label=f"{target[0]} ({target[1]:.0f} {unit})")
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
