"""Faults an operator can cause by hand, through the `cocoon` CLI as an engine drives it.

Each case is one of issue 12's "seen failing on main": a host process of the sandbox killed (a
shim, the monitor, virtiofsd), a full state root, signals sent to the guest's PID 1, and input
that must be refused by name. After each, the container must be reachable or truthfully
stopped, `delete` must leave nothing, and nothing outside the sandbox may be touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework.cli import Cli
from tests.vm.container_kit import make_bundle

pytestmark = pytest.mark.vm

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


@pytest.fixture
def cli(state_root: Path) -> Cli:
    return Cli(state_root)


@pytest.fixture
def ids(cli: Cli) -> Iterator[list[str]]:
    """Ids to force-delete at the end, whatever happened."""
    made: list[str] = []
    yield made
    for cid in made:
        cli("delete", "--force", cid)


def run_detached(cli: Cli, tmp_path: Path, ids: list[str], cid: str, args: list[str],
                 edit: object = None) -> None:
    ids.append(cid)
    bundle = make_bundle(tmp_path / cid, args, edit)  # type: ignore[arg-type]
    cli.ok("run", "--detach", "--bundle", str(bundle), cid)


def state(cli: Cli, cid: str) -> dict[str, object]:
    return dict(json.loads(cli.ok("state", cid)))


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} is still there"


def take_pid(pid: int, tries: int = 50) -> subprocess.Popen[bytes]:
    """A `sleep 300` in a session of its own that holds `pid` (freed before)."""
    for _ in range(tries):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"could not get pid {pid} back (a busy host took it first)")


# --- 1: a dead shim's pid is not signalled ----------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="ns_last_pid needs root")
def test_delete_does_not_kill_the_process_that_took_a_dead_shims_pid(
        cli: Cli, tmp_path: Path, ids: list[str]) -> None:
    run_detached(cli, tmp_path, ids, "reuse", ["sleep", "1000"])
    shim = int(state(cli, "reuse")["pid"])  # type: ignore[call-overload]
    os.kill(shim, signal.SIGKILL)
    wait_gone(shim)
    assert state(cli, "reuse")["pid"] == 0
    stranger = take_pid(shim)
    try:
        cli.ok("delete", "--force", "reuse")
        time.sleep(0.2)
        assert stranger.poll() is None, "delete killed a process that took the dead shim's pid"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="ns_last_pid needs root")
def test_delete_does_not_kill_the_process_that_took_a_dead_exec_shims_pid(
        cli: Cli, tmp_path: Path, ids: list[str]) -> None:
    run_detached(cli, tmp_path, ids, "reusex", ["sleep", "1000"])
    pid_file = tmp_path / "exec.pid"
    cli.ok("exec", "--detach", "--pid-file", str(pid_file), "reusex", "sleep", "1000")
    shim = int(pid_file.read_text())
    os.kill(shim, signal.SIGKILL)
    wait_gone(shim)
    stranger = take_pid(shim)
    try:
        assert cli.ok("ps", "--format", "json", "reusex").count(str(shim)) == 0
        cli.ok("delete", "--force", "reusex")
        time.sleep(0.2)
        assert stranger.poll() is None, "delete killed a process that took an exec shim's pid"
    finally:
        stranger.kill()
        stranger.wait()

