"""The leak check: after a scenario, nothing of the sandboxes it made may be left on the host.

A leak is a QEMU, virtiofsd, sandbox monitor or shim process, a mount, or a directory that the
scenario made and did not remove. Other engineers' VMs run on the same host at the same time, so
"ours" is decided by evidence, never by a process name alone:

- a process descended from the test process (QEMU started by a test, a monitor the launcher
  spawned, a shim forked by the runtime), or
- a process whose command line, working directory or open files point into a watched root
  (the test's private VM root; a monitor, or a shim that has its sandbox's log open; entries
  created during the test in a shared root such as /run/cocoon-vm).

Processes that existed when the check began (a module-scoped fixture's VM) are not counted.
A cgroup directory made during the test that no process is in (the host cgroup of a container
the scenario deleted, or one a failed create left) is a leak too; one with processes is someone's
live work and only its processes can be ours.
Network leftovers (a tc redirect of Cocoon's priority with no Cocoon tap beside it:
`cocoon.network.audit`) count in the host's namespace and in named namespaces made during the
test; they are reported, never cleaned (a namespace may be someone else's).
What is found is cleaned up (processes killed by pid, mounts detached, directories removed) so
one leaking test does not fail the next, and then reported as the test's failure. Only processes
the test provably started (descendants, or tied to a private root) are killed; those tied to a
shared root are reported only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.linux import syscalls as sc
from cocoon.network import audit
from cocoon.sandbox import pool

CGROUP_ROOT = Path("/sys/fs/cgroup")
# how long a scenario's processes may take to finish exiting after it returns
DEFAULT_SETTLE = 15.0
_POLL = 0.1


@dataclass(frozen=True)
class ProcInfo:
    """What the check knows about one host process."""

    pid: int
    ppid: int
    state: str
    start: int  # clock ticks since boot: with the pid, identifies the process
    argv: tuple[str, ...]
    paths: tuple[str, ...]  # cwd and open files

    @property
    def kind(self) -> str:
        exe = os.path.basename(self.argv[0]) if self.argv else ""
        if exe.startswith("qemu-system"):
            return "qemu"
        if exe == "virtiofsd":
            return "virtiofsd"
        if "cocoon.sandbox.monitor" in self.argv:
            return "monitor"
        return "process"

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start

    def describe(self) -> str:
        return f"{self.kind} pid {self.pid}: {' '.join(self.argv)[:200]}"


def _read_stat(pid: int) -> tuple[int, str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _read_paths(pid: int) -> tuple[str, ...]:
    paths: list[str] = []
    with contextlib.suppress(OSError):
        paths.append(os.readlink(f"/proc/{pid}/cwd"))
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return tuple(paths)
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("/"):
                paths.append(target.removesuffix(" (deleted)"))
    return tuple(paths)


def processes() -> list[ProcInfo]:
    """Every process on the host, as far as /proc lets us see it now."""
    found: list[ProcInfo] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        stat = _read_stat(pid)
        if stat is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
        except OSError:
            argv = ()
        ppid, state, start = stat
        found.append(ProcInfo(pid, ppid, state, start, argv, _read_paths(pid)))
    return found


def descendants(of: int, table: Iterable[ProcInfo]) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in table:
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    todo = [of]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _under(path: str, roots: Iterable[Path]) -> bool:
    return any(path == str(root) or path.startswith(f"{root}/") for root in roots)


def mounts_under(roots: Iterable[Path]) -> list[str]:
    """Mount points at or below any of `roots` in this mount namespace, deepest first."""
    roots = list(roots)
    found: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if _under(target, roots):
                found.add(target)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def cgroup_dirs(root: Path = CGROUP_ROOT) -> set[Path]:
    """Every cgroup directory below the hierarchies' roots."""
    found: set[Path] = set()
    with contextlib.suppress(OSError):
        for mount in root.iterdir():
            if not (mount / "cgroup.procs").exists():
                continue
            for directory, _subdirs, _ in os.walk(mount):
                if directory != str(mount):
                    found.add(Path(directory))
    return found


def _empty_cgroup(path: Path) -> bool:
    try:
        return not (path / "cgroup.procs").read_text().split()
    except OSError:
        return False


@dataclass
class LeakReport:
    processes: list[ProcInfo] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.mounts or self.paths or self.network or self.cgroups)

    def __str__(self) -> str:
        lines = [p.describe() for p in self.processes]
        lines += [f"mount {m}" for m in self.mounts]
        lines += [f"path {p}" for p in self.paths]
        lines += [f"network {n}" for n in self.network]
        lines += [f"cgroup {c}" for c in self.cgroups]
        return "; ".join(lines) or "nothing"


def _pool_entry(entry: Path) -> bool:
    return entry.name == pool.INDEX or (entry / pool.MARKER).exists()


class LeakCheck:
    """Baseline now, `check()` later. See the module docstring for what counts as ours.

    `private` roots belong to this test alone: anything in them is a leak. `shared` roots are
    used by others too: only entries that appear after the baseline count. `state_roots` may
    keep files (locks) but no directory.
    """

    def __init__(self, private: Iterable[Path] = (), shared: Iterable[Path] = (),
                 state_roots: Iterable[Path] = ()) -> None:
        self.me = os.getpid()
        self.private = [Path(p) for p in private]
        self.shared = [Path(p) for p in shared]
        self.state_roots = [Path(p) for p in state_roots]
        self._baseline_procs: set[tuple[int, int]] = set()
        self._baseline_entries: set[Path] = set()
        self._baseline_network: set[str] = set()
        self._baseline_netns: set[str] = set()
        self._baseline_cgroups: set[Path] = set()
        self.baseline()

    def baseline(self) -> None:
        self._baseline_procs = {p.key for p in processes()}
        self._baseline_entries = {entry for root in self.shared if root.is_dir()
                                  for entry in root.iterdir()}
        self._baseline_netns = set(audit.named_namespaces())
        self._baseline_network = self._network()
        self._baseline_cgroups = cgroup_dirs()

    def _fresh_cgroups(self) -> list[Path]:
        """Cgroups made since the baseline that hold no process, deepest first."""
        fresh = [d for d in cgroup_dirs() - self._baseline_cgroups if _empty_cgroup(d)]
        return sorted(fresh, key=lambda p: len(p.parts), reverse=True)

    def watch_state_root(self, path: Path) -> None:
        self.state_roots.append(Path(path))

    def _fresh_shared(self) -> list[Path]:
        """New entries of the shared roots, but the warm pool's: a clone the pool started
        meanwhile (to replace one a test took) is the pool's, kept by design; `cocoon template
        rm` stops it. In a private root a pool member is a leak like anything else."""
        return [entry for root in self.shared if root.is_dir()
                for entry in sorted(root.iterdir())
                if entry not in self._baseline_entries and not _pool_entry(entry)]

    def _owned(self) -> tuple[list[ProcInfo], set[int]]:
        """Our processes, and the pids among them that we may kill."""
        table = processes()
        mine = descendants(self.me, table)
        fresh = self._fresh_shared()
        owned: list[ProcInfo] = []
        killable: set[int] = set()
        for proc in table:
            if proc.pid == self.me or proc.key in self._baseline_procs or proc.state == "Z":
                continue
            tied_private = any(_under(p, self.private) for p in (*proc.argv, *proc.paths))
            tied_shared = any(_under(p, fresh) for p in (*proc.argv, *proc.paths))
            descendant = proc.pid in mine and (proc.kind != "process" or self._is_fork(proc))
            if descendant or tied_private or tied_shared:
                owned.append(proc)
                if descendant or tied_private:
                    killable.add(proc.pid)
        return owned, killable

    def _network(self) -> set[str]:
        fresh = [n for n in audit.named_namespaces() if n not in self._baseline_netns]
        return audit.scan([audit.HOST_NETNS, *fresh])

    def _is_fork(self, proc: ProcInfo) -> bool:
        """A forked copy of the test process: what the runtime's shims are."""
        try:
            with open(f"/proc/{self.me}/cmdline", "rb") as f:
                mine = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
        except OSError:
            return False
        return proc.argv == mine

    def find(self) -> LeakReport:
        report = LeakReport()
        report.processes, _ = self._owned()
        roots = [*self.private, *self._fresh_shared(), *self.state_roots]
        report.mounts = mounts_under(roots)
        for root in self.private:
            if root.is_dir():
                report.paths.extend(sorted(root.iterdir()))
        report.paths.extend(self._fresh_shared())
        for root in self.state_roots:
            if root.is_dir():
                report.paths.extend(sorted(p for p in root.rglob("*") if p.is_dir()))
        report.network = sorted(self._network() - self._baseline_network)
        report.cgroups = self._fresh_cgroups()
        return report

    def check(self, settle: float = DEFAULT_SETTLE) -> LeakReport:
        """Wait up to `settle` s for everything to go; return what was left (after cleaning)."""
        deadline = time.monotonic() + settle
        while True:
            self.reap_children()
            report = self.find()
            if not report or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        if report:
            self.clean()
        return report

    def clean(self) -> None:
        """Remove what the test left: kill its processes, detach mounts, remove directories."""
        _, killable = self._owned()
        for pid in killable:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while killable and time.monotonic() < deadline:
            self.reap_children()
            alive = {p.pid for p in processes() if p.state != "Z"}
            if not killable & alive:
                break
            time.sleep(_POLL)
        roots = [*self.private, *self._fresh_shared(), *self.state_roots]
        for target in mounts_under(roots):
            try:
                sc.umount2(target, sc.MNT_DETACH)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
        for root in self.private:
            if root.is_dir():
                for entry in root.iterdir():
                    _remove(entry)
        for entry in self._fresh_shared():
            _remove(entry)
        for root in self.state_roots:
            if root.is_dir():
                for entry in root.iterdir():
                    _remove(entry)
        for cgroup in self._fresh_cgroups():
            with contextlib.suppress(OSError):
                cgroup.rmdir()

    def reap_children(self) -> None:
        """Reap our exited children (a monitor the launcher spawned and nobody waits for)."""
        for proc in processes():
            if proc.ppid == self.me and proc.state == "Z" and proc.key not in \
                    self._baseline_procs:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, os.WNOHANG)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
