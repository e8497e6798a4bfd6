"""The agent as PID 1 keeps every signal at its default action, which the kernel drops for a
namespace's init: `kill -INT 1` from a container that shares the guest's pid namespace (or a
signal from outside it) must not end the agent, and with it the VM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a pid namespace needs root and unshare(1)")

PROGRAM = """
import sys, time
if sys.argv[1] == "agent":
    from cocoon.agent.main import keep_signals_default
    keep_signals_default()
print("ready", flush=True)
time.sleep(60)
"""
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGQUIT, signal.SIGALRM, signal.SIGABRT, signal.SIGSEGV, signal.SIGTRAP,
           signal.SIGPWR, signal.SIGTSTP, signal.SIGPIPE, signal.SIGRTMIN, signal.SIGRTMAX]


def init_of_a_pid_namespace(mode: str) -> tuple[subprocess.Popen[str], int]:
    """`python PROGRAM mode` as PID 1 of a new pid namespace; its host pid."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", sys.executable,
                             "-c", PROGRAM, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        return proc, int(f.read().split()[0])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_pid_1_with_the_agents_dispositions_outlives_every_signal() -> None:
    proc, init = init_of_a_pid_namespace("agent")
    try:
        for sig in SIGNALS:
            os.kill(init, sig)
        time.sleep(0.5)
        assert alive(init), "the agent's PID 1 died of a signal"
    finally:
        proc.kill()
        proc.wait()


def test_python_s_own_sigint_handler_would_end_it() -> None:
    proc, init = init_of_a_pid_namespace("plain")
    try:
        os.kill(init, signal.SIGINT)
        proc.wait(timeout=10)
        assert not alive(init)  # KeyboardInterrupt: what the agent did before
    finally:
        proc.kill()
        proc.wait()
