"""The fault matrix: each host part of a sandbox, and the agent in the guest, killed with
SIGKILL at each point of a container's life, through the `cocoon` CLI as an engine drives it.

Every cell asks the same of the aftermath: the command that was running when the part died
ends with an exit status or a one-line error (never a traceback, never a hang), `state` says
the truth (the container is stopped, or gone when its create failed), `delete --force` removes
it, and the leak check finds nothing left (process, mount, tap, tc filter, cgroup, socket or
directory). The agent is PID 1 of the guest and cannot be killed from outside: its death is
made as the kernel sees it, by crashing the guest (`echo c > /proc/sysrq-trigger` from a
privileged exec; the guest panics, `panic=-1` and `-no-reboot` end QEMU).

docs/reliability.md shows the table this module produces: run it with
`COCOON_WRITE_RELIABILITY=1` to write the table there; without it, the last test checks that
the page matches what this run found.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cocoon.sandbox import launcher, pool
from cocoon.sandbox.launcher import sandbox_processes
from cocoon.sandbox.layout import Layout
from cocoon.sandbox.share import detach_all
from cocoon.template import store
from tests.framework.cli import COCOON, Cli
from tests.framework.leaks import LeakCheck
from tests.vm.container_kit import make_bundle

pytestmark = pytest.mark.vm

COMPONENTS = ("qemu", "virtiofsd", "monitor", "shim", "agent")
LIFE = ("create", "created", "running", "exec", "delete")
# a template being built (by the first sandbox that needs it), a pool member starting, and a
# pool member being claimed by a create
STARTS = ("template build", "pool start", "pool claim")
POINTS = LIFE + STARTS
# a cell that cannot be made, and why (shown in the table)
NOT_APPLICABLE = {
    ("agent", "create"): "the agent serves no container yet: a guest dying during create is "
                         "the QEMU cell",
    ("virtiofsd", "template build"): "a template VM has no share",
    **{("shim", p): "no container process exists yet" for p in STARTS},
    **{("agent", p): "the agent serves no container yet (no exec can crash the guest): a "
                     "guest dying then is the QEMU cell" for p in STARTS},
}
RESULTS: dict[tuple[str, str], str] = {cell: "n/a" for cell in NOT_APPLICABLE}
CELLS = [(c, p) for c in COMPONENTS for p in LIFE if (c, p) not in NOT_APPLICABLE]
START_CELLS = [(c, p) for c in COMPONENTS for p in STARTS if (c, p) not in NOT_APPLICABLE]
PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
STATE_DEADLINE = 30.0
SYSRQ_CRASH = {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
               "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],
               "args": ["sh", "-c", "echo c > /proc/sysrq-trigger"],
               "capabilities": {k: ["CAP_SYS_ADMIN"] for k in
                                ("bounding", "effective", "permitted")}}


@pytest.fixture
def cli(vm_root: Path, state_root: Path) -> Cli:
    return Cli(state_root, timeout=120.0)


def privileged_sleeper(directory: Path) -> Path:
    """A sleeping container whose /proc/sysrq-trigger is writable (for the agent's cells)."""
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["readonlyPaths"] = []
        spec["linux"]["maskedPaths"] = []
    return make_bundle(directory, ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1;"
                                               " done"], edit)


class Running:
    """A cocoon command in the background, its stderr in a file: a container's shim keeps the
    caller's stdio, so a pipe would not reach its end while the shim lives."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by finished())
        self.proc = subprocess.Popen([COCOON, "--root", str(cli.root), *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, text=True)


def popen(cli: Cli, *args: str) -> Running:
    return Running(cli, *args)


def finished(running: Running, what: str, timeout: float = 120.0) -> tuple[int, str]:
    proc = running.proc
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{what} hung for {timeout:.0f} s after the kill") from None
    running.err.seek(0)
    err = running.err.read()
    running.err.close()
    assert "Traceback" not in err, f"{what}: {err}"
    # success, an exit status relayed (a process killed with its sandbox: 137), or one line
    assert len(err.strip().splitlines()) <= 1, f"{what}: {err!r}"
    return proc.returncode, err


def state_file(cli: Cli, cid: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((cli.root / cid / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def vm_dir(cli: Cli, cid: str, vm_root: Path) -> Path | None:
    state = state_file(cli, cid)
    if state and state.get("vm_dir"):
        return Path(state["vm_dir"])
    dirs = [d for d in vm_root.iterdir() if d.is_dir()] if vm_root.is_dir() else []
    return dirs[0] if len(dirs) == 1 else None


def target_pid(component: str, cli: Cli, cid: str, vm_root: Path) -> int | None:
    """The pid to kill for `component`, or None while it does not exist (yet)."""
    if component == "shim":
        state = state_file(cli, cid)
        return int(state["pid"]) if state and state.get("pid") else None
    directory = vm_dir(cli, cid, vm_root)
    if directory is None:
        return None
    for pid in sorted(sandbox_processes(directory, shims=False), reverse=True):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        exe = os.path.basename(argv[0].decode(errors="replace"))
        if (component == "qemu" and exe.startswith("qemu-system")) or \
                (component == "virtiofsd" and exe == "virtiofsd") or \
                (component == "monitor" and b"cocoon.sandbox.monitor" in argv):
            return pid
    return None


def kill(component: str, cli: Cli, cid: str, vm_root: Path, wait: float = 60.0) -> bool:
    """SIGKILL the component (crash the guest for the agent); False if it never appeared."""
    if component == "agent":
        spec = cli.root.parent / f"crash-{cid}.json"
        spec.write_text(json.dumps(SYSRQ_CRASH))
        result = cli("exec", "--process", str(spec), cid, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return True
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = target_pid(component, cli, cid, vm_root)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.005)
    return False


def nothing_left(leak_check: LeakCheck) -> None:
    """The leak check, before the cell is called ok (the suite's runs again after the test)."""
    report = leak_check.check()
    assert not report, f"the cell left behind: {report}"


def status(cli: Cli, cid: str) -> str:
    result = cli("state", cid)
    if result.returncode != 0:
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in \
            result.stderr, result.stderr
        return "gone"
    return str(json.loads(result.stdout)["status"])


def settles(cli: Cli, cid: str, allowed: tuple[str, ...]) -> str:
    """Wait until `state` says one of `allowed`; what it last said."""
    deadline = time.monotonic() + STATE_DEADLINE
    said = status(cli, cid)
    while said not in allowed and time.monotonic() < deadline:
        time.sleep(0.2)
        said = status(cli, cid)
    return said


@pytest.mark.parametrize(("component", "point"), CELLS, ids=[f"{c}-{p}" for c, p in CELLS])
def test_a_part_killed_at_a_point_of_the_life(component: str, point: str, cli: Cli,
                                              vm_root: Path, tmp_path: Path,
                                              leak_check: LeakCheck) -> None:
    RESULTS[(component, point)] = "failed"
    cid = f"f-{component}-{point}"
    bundle = privileged_sleeper(tmp_path / "bundle")
    try:
        if point == "create":
            create = popen(cli, "create", "--bundle", str(bundle), cid)
            assert kill(component, cli, cid, vm_root), f"no {component} appeared during create"
            code, _ = finished(create, "create")
            said = settles(cli, cid, ("created", "stopped", "gone"))
            if code == 0 and said == "created":
                # the part died where Cocoon recovers (a clone that fails is booted cold): the
                # container is created, and works; or it died as create answered (a virtiofsd
                # killed then is noticed a moment later): the sandbox stops, and says so
                start = cli("start", cid)
                if start.returncode == 0:
                    assert cli.ok("exec", cid, "echo", "alive").strip() == "alive"
                else:
                    assert start.stderr == f"cocoon: cannot start container {cid}: it is " \
                        "stopped\n", start.stderr
                    assert settles(cli, cid, ("stopped",)) == "stopped"
            elif code == 0:
                # it died once create was done (the shim, as create returned): it is stopped
                assert said == "stopped", f"state says {said} after {component} died"
            else:
                said = settles(cli, cid, ("stopped", "gone"))
                assert said in ("stopped", "gone"), f"state says {said} after {component} died"
        else:
            cli.ok("create", "--bundle", str(bundle), cid)
            if point != "created":
                cli.ok("start", cid)
            if point == "exec":
                execution = popen(cli, "exec", cid, "sleep", "60")
                time.sleep(1.0)
                assert kill(component, cli, cid, vm_root)
                code, _ = finished(execution, "exec")
                assert code != 0, "the exec reported success though its process was killed"
            elif point == "delete":
                deletion = popen(cli, "delete", "--force", cid)
                time.sleep(0.3)
                kill(component, cli, cid, vm_root, wait=2.0)  # delete may have won the race
                finished(deletion, "delete")
            else:
                assert kill(component, cli, cid, vm_root)
            said = settles(cli, cid, ("stopped", "gone"))
            assert said in ("stopped", "gone"), f"state says {said} after {component} died"
        result = cli("delete", "--force", cid)
        assert result.returncode == 0 or "does not exist" in result.stderr, result.stderr
        assert status(cli, cid) == "gone"
    finally:
        cli("delete", "--force", cid)
    nothing_left(leak_check)
    RESULTS[(component, point)] = "ok"


# --- a template being built, a pool member starting or being claimed ------------------------


@pytest.fixture(scope="module")
def pool_templates() -> Iterator[Path]:
    """One template directory for the pool cells (its template built by the first of them)."""
    directory = Path(tempfile.mkdtemp(prefix="ctpl-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start_pid(component: str, directories: list[Path], template_build: bool) -> int | None:
    """The pid of `component` of the first of `directories` that has one (of a template
    build's VM only, with `template_build`; the monitor once its QEMU runs)."""
    for directory in directories:
        qemu = None
        for pid in sandbox_processes(directory, shims=False):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            exe = os.path.basename(argv[0].decode(errors="replace"))
            if exe.startswith("qemu-system") and (
                    not template_build or any(b"cocoon-template-" in a for a in argv)):
                qemu = pid
            elif component == "virtiofsd" and exe == "virtiofsd":
                return pid
        if qemu is not None and component == "qemu":
            return qemu
        if qemu is not None and component == "monitor":
            return launcher.monitor_pid(Layout(directory))
    return None


def kill_first(component: str, directories: Callable[[], list[Path]],
               template_build: bool = False, wait: float = 120.0) -> Path | None:
    """SIGKILL `component` of a sandbox directory as soon as it runs; the directory."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = directories()
        for directory in found:
            pid = start_pid(component, [directory], template_build)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return directory
        time.sleep(0.005)
    return None


def pool_dirs(vm_root: Path, ready: bool | None = None) -> list[Path]:
    return [m.path for m in pool.members() if ready is None or m.ready == ready] + \
        [d for d in vm_root.iterdir() if (d / pool.MARKER).exists()
         and not launcher.monitor_pid(Layout(d))] if vm_root.is_dir() else []


def works(cli: Cli, cid: str, bundle: Path) -> None:
    """A container of the id can be created, started and reached, then is removed."""
    cli.ok("create", "--bundle", str(bundle), cid)
    cli.ok("start", cid)
    assert cli.ok("exec", cid, "echo", "alive").strip() == "alive"
    cli.ok("delete", "--force", cid)
    assert status(cli, cid) == "gone"


def create_outcome(cli: Cli, cid: str, code: int, component: str) -> None:
    """After `create` ran while a part died: it worked (recovered) or the state is the truth;
    either way `delete --force` removes the container."""
    said = settles(cli, cid, ("created", "stopped", "gone"))
    if code == 0 and said == "created":
        cli.ok("start", cid)
        assert cli.ok("exec", cid, "echo", "alive").strip() == "alive"
    else:
        said = settles(cli, cid, ("stopped", "gone"))
        assert said in ("stopped", "gone"), f"state says {said} after {component} died"
    result = cli("delete", "--force", cid)
    assert result.returncode == 0 or "does not exist" in result.stderr, result.stderr
    assert status(cli, cid) == "gone"


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)


@pytest.mark.parametrize(("component", "point"), START_CELLS,
                         ids=[f"{c}-{p.replace(' ', '-')}" for c, p in START_CELLS])
def test_a_part_killed_while_a_template_or_pool_member_starts(
        component: str, point: str, cli: Cli, vm_root: Path, tmp_path: Path,
        pool_templates: Path, monkeypatch: pytest.MonkeyPatch, leak_check: LeakCheck) -> None:
    RESULTS[(component, point)] = "failed"
    monkeypatch.setenv("COCOON_TEMPLATES", "on")
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "1000"])
    cid = f"s-{component}"
    if point == "template build":
        templates = tmp_path / "templates"  # none yet: the create builds it
        monkeypatch.setenv(store.ENV_DIR, str(templates))
        create = popen(cli, "create", "--bundle", str(bundle), cid)
        assert kill_first(component, lambda: [d for d in vm_root.iterdir() if d.is_dir()],
                          template_build=True), f"no template build's {component} was seen"
        code, _ = finished(create, "create")
        create_outcome(cli, cid, code, component)
        # what the build left half made is never used: the next sandbox builds it whole
        works(cli, "s-next", bundle)
        listed = store.listing(templates)
        assert [type(t) for _, t in listed] == [store.Template], listed
        assert not [p.name for p in templates.iterdir() if p.name.startswith(store.TMP_PREFIX)]
    else:
        monkeypatch.setenv(store.ENV_DIR, str(pool_templates))
        monkeypatch.setenv(pool.ENV_SIZE, "1")
        warm = make_bundle(tmp_path / "warm", ["true"])
        try:
            if point == "pool start":
                # the run fills the pool behind its own sandbox: the member is killed as it
                # starts (the first cell's run builds the template first)
                running = popen(cli, "run", "--bundle", str(warm), "warm")
                member = kill_first(component, lambda: pool_dirs(vm_root, ready=False),
                                    wait=300.0)
                code, _ = finished(running, "run", timeout=300.0)
                assert code == 0
                assert member is not None, f"no pool member's {component} was seen"
                # the member stops itself, or (its monitor killed) is reaped by the next refill
                works(cli, cid, bundle)
                dead = member
                wait_until(f"the end of the dead member {dead.name}",
                           lambda: not dead.exists(), timeout=15.0)
            else:
                cli.ok("run", "--bundle", str(warm), "warm", timeout=300)
                wait_until("a ready member", lambda: any(m.ready for m in pool.members()))
                ready = next(m for m in pool.members() if m.ready)
                member, entry = ready.path, pool.index_dir(ready.template) / ready.path.name
                create = popen(cli, "create", "--bundle", str(bundle), cid)
                wait_until("the claim", lambda: not entry.exists(), timeout=120)
                assert kill_first(component, lambda: [member], wait=5.0) or \
                    not member.exists(), f"the claimed member's {component} was not seen"
                code, _ = finished(create, "create")
                create_outcome(cli, cid, code, component)
                assert not member.exists(), f"the claimed member {member.name} is left"
        finally:
            cli("delete", "--force", cid)
            pool.stop_sync()  # the members the runs started (the template stays for the next)
        assert pool.members() == []
    nothing_left(leak_check)
    RESULTS[(component, point)] = "ok"


OTHER = ("host restart", "memory exhausted in the VM")


def test_a_host_restart_leaves_state_that_delete_clears(cli: Cli, vm_root: Path,
                                                        tmp_path: Path) -> None:
    """As after a reboot with a state root that survived (or an engine's copy of it): every
    process of the sandbox gone at once and its VM directory gone with /run."""
    RESULTS[("host restart", "")] = "failed"
    cid = "f-restart"
    cli.ok("run", "--detach", "--bundle", str(privileged_sleeper(tmp_path / "b")), cid)
    state = state_file(cli, cid)
    assert state is not None
    directory = Path(state["vm_dir"])
    for pid in [*sandbox_processes(directory), state["pid"]]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sandbox_processes(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    detach_all(directory)
    shutil.rmtree(directory, ignore_errors=True)
    assert settles(cli, cid, ("stopped",)) == "stopped"
    cli.ok("delete", "--force", cid)
    assert status(cli, cid) == "gone"
    RESULTS[("host restart", "")] = "ok"


def test_memory_exhausted_in_the_vm_kills_the_process_not_the_vm(
        cli: Cli, tmp_path: Path) -> None:
    """A container with no limit of its own fills the VM's memory: the guest's OOM killer
    takes the container's process (the agent, PID 1, is never its victim), the caller gets
    137, and the VM still serves the next exec."""
    RESULTS[("memory exhausted in the VM", "")] = "failed"
    cid = "f-oom"
    cli.ok("run", "--detach", "--bundle", str(privileged_sleeper(tmp_path / "b")), cid)
    try:
        # one endless line: tail's buffer grows until the guest has no memory left
        hog = cli("exec", cid, "tail", "/dev/zero", timeout=240)
        assert hog.returncode == 137, (hog.returncode, hog.stderr)
        assert cli.ok("exec", cid, "echo", "alive").strip() == "alive"
        assert status(cli, cid) == "running"
    finally:
        cli("delete", "--force", cid)
    RESULTS[("memory exhausted in the VM", "")] = "ok"


def render() -> str:
    header = "| killed | " + " | ".join(f"during {p}" if p in ("create", "exec", "delete")
                                        else p for p in POINTS) + " |"
    lines = [header, "| --- |" + " --- |" * len(POINTS)]
    for component in COMPONENTS:
        cells = []
        for point in POINTS:
            result = RESULTS.get((component, point), "not run")
            cells.append({"ok": "ok", "n/a": "n/a"}.get(result, f"**{result}**"))
        lines.append(f"| {component} | " + " | ".join(cells) + " |")
    lines += ["", "| other fault | result |", "| --- | --- |"]
    for fault in OTHER:
        result = RESULTS.get((fault, ""), "not run")
        lines.append(f"| {fault} | {result if result == 'ok' else f'**{result}**'} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- fault matrix: begin -->\n", "<!-- fault matrix: end -->\n"


def test_the_reliability_page_shows_this_table() -> None:
    if len(RESULTS) < len(COMPONENTS) * len(POINTS) + len(OTHER):
        pytest.skip("the whole matrix did not run in this session")
    table = render()
    text = PAGE.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    if os.environ.get("COCOON_WRITE_RELIABILITY"):
        PAGE.write_text(head + BEGIN + table + END + tail)
        return
    assert head + BEGIN + table + END + tail == text, \
        f"docs/reliability.md is not this run's table:\n{table}"
