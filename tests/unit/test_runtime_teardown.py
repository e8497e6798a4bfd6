"""Teardown signals a shim only while it is provably the process that was recorded."""

from __future__ import annotations

import subprocess

from cocoon.oci.state import ContainerState, is_ours, process_start_time
from cocoon.runtime.teardown import kill_quietly


def test_a_pid_is_ours_only_with_its_recorded_start_time() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start_time(proc.pid)
        assert start
        assert is_ours(proc.pid, start)
        assert not is_ours(proc.pid, start + 1)  # the same pid, another process
        assert not is_ours(proc.pid, 0)  # nothing recorded proves nothing
        assert not is_ours(0, start)
    finally:
        proc.kill()
        proc.wait()


def test_kill_quietly_spares_a_process_that_took_the_pid() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start_time(proc.pid)
        assert start
        kill_quietly(proc.pid, start - 1)
        kill_quietly(proc.pid, 0)
        assert proc.poll() is None
        kill_quietly(proc.pid, start)
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()


def test_the_shims_of_a_state_carry_their_start_times() -> None:
    state = ContainerState(id="c", bundle="/b", rootfs="/b/rootfs", pid=10, pid_start=7,
                           execs={"e1": 11, "e2": 12}, exec_starts={"e1": 8})
    assert state.shims() == [(10, 7), (11, 8), (12, 0)]
    old = ContainerState.from_json({"id": "c", "bundle": "/b", "rootfs": "/r",
                                    "execs": {"e": 5}})  # a state written before exec_starts
    assert old.shims() == [(0, 0), (5, 0)]
