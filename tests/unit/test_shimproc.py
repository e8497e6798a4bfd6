"""The per-process shim as a real process against a stand-in monitor socket: its stdio handed
over, signals forwarded, the exit status taken as its own, and nothing heavy imported."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.linux import privileges
from cocoon.runtime import shimproc, shimwire
from cocoon.runtime.shim import ShimSpec

HEAVY = ("asyncio", "google.protobuf", "qemu", "pyroute2", "cocoon.sandbox", "cocoon.ttrpc",
         "argparse", "logging", "typing")


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "shim.sock"))
    server.listen(1)
    server.settimeout(20)
    yield server
    server.close()


def start(tmp_path: Path, **spec: object) -> subprocess.Popen[bytes]:
    argv = ShimSpec(tmp_path / "shim.sock", "ctr", **spec).argv()  # type: ignore[arg-type]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def accept(monitor: socket.socket) -> tuple[socket.socket, dict[str, object], list[int]]:
    conn, _ = monitor.accept()
    conn.settimeout(20)
    data, fds = shimwire.recv_with_fds(conn)
    return conn, shimwire.decode(data.split(b"\n")[0]), fds


def test_the_shim_hands_over_its_stdio_and_exits_with_the_status(tmp_path: Path,
                                                                 monitor: socket.socket) -> None:
    shim = start(tmp_path, exec_id="e1")
    conn, message, fds = accept(monitor)
    try:
        assert message == {"attach": {"container_id": "ctr", "exec_id": "e1",
                                      "terminal": False}}
        assert len(fds) == 3
        os.write(fds[1], b"out via the monitor\n")  # the shim's own stdout, written here
    finally:
        for fd in fds:  # the monitor's copies: the pipe ends with the shim's own
            os.close(fd)
    conn.sendall(shimwire.encode({"exit": 7}))
    out, _ = shim.communicate(timeout=20)
    conn.close()
    assert shim.returncode == 7
    assert out == b"out via the monitor\n"


def test_signals_are_forwarded_and_a_signal_status_is_exited_by(tmp_path: Path,
                                                                monitor: socket.socket) -> None:
    shim = start(tmp_path)
    conn, _, fds = accept(monitor)
    try:
        shim.send_signal(signal.SIGUSR1)
        shim.send_signal(signal.SIGTERM)
        got = b""
        while got.count(b"\n") < 2:
            got += conn.recv(4096)
        assert [shimwire.decode(line) for line in got.splitlines()] == [
            {"signal": signal.SIGUSR1}, {"signal": signal.SIGTERM}]
        conn.sendall(shimwire.encode({"exit": 128 + signal.SIGTERM}))
        shim.wait(timeout=20)
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
    assert shim.returncode == -signal.SIGTERM  # as the guest process ended


def test_a_monitor_that_hangs_up_means_killed(tmp_path: Path, monitor: socket.socket) -> None:
    shim = start(tmp_path)
    conn, _, fds = accept(monitor)
    for fd in fds:
        os.close(fd)
    conn.close()
    shim.wait(timeout=20)
    assert shim.returncode == -signal.SIGKILL  # 137


def test_no_monitor_means_killed_too(tmp_path: Path) -> None:
    shim = start(tmp_path)
    shim.wait(timeout=20)
    assert shim.returncode == -signal.SIGKILL


def test_the_shim_imports_nothing_heavy(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-I", "-X", "importtime", "-m",
                             "cocoon.runtime.shimproc", "--socket", str(tmp_path / "none"),
                             "--container", "c"],
                            capture_output=True, text=True, timeout=60, check=False)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = sorted(name for name in imported if name.startswith(HEAVY))
    assert heavy == [], heavy


def test_the_namespace_is_opened_before_the_placeholder_hides_proc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The placeholder mounts a /proc of its own pid namespace in the shim's mount namespace,
    racing the shim: a /proc/PID/ns/net path must be opened before (a pod member's shim
    exited under load when the mount won)."""
    from cocoon.linux import syscalls as sc
    from cocoon.runtime import shimproc

    path = tmp_path / "netns"
    path.write_text("")
    joined: list[tuple[int, int]] = []

    def hide() -> None:
        path.unlink()  # as the new /proc does to /proc/PID of a host process

    def setns(fd: int, kind: int) -> None:
        joined.append((os.fstat(fd).st_ino, kind))

    def confine(keep: int) -> None:  # the test's own process keeps its capabilities
        joined.append((-1, keep))

    monkeypatch.setattr(shimproc, "hide_host_processes", hide)
    monkeypatch.setattr(sc, "setns", setns)
    monkeypatch.setattr(privileges, "confine", confine)
    inode = path.stat().st_ino
    args = shimproc.Args(["--socket", str(tmp_path / "none.sock"), "--container", "c",
                          "--netns", str(path)])
    assert shimproc.run(args) == shimwire.LOST_STATUS  # no monitor here: it stops after setns
    assert joined == [(inode, sc.CLONE_NEWNET), (-1, 0)]  # everything dropped after setns


def test_the_shim_and_its_placeholder_hold_no_capability(tmp_path: Path,
                                                         monitor: socket.socket) -> None:
    """Once set up (its /proc hidden, its namespace joined), the shim talks to the monitor
    and nothing else: every capability set empty, the bounding set too, no_new_privs set;
    and so for the placeholder that stands in its pid namespace. It still does its job."""
    if os.geteuid() != 0:
        pytest.skip("only root has capabilities to drop")
    before = privileges.status_of("self")
    assert before["CapEff"] != 0 and before["CapBnd"] != 0  # the shim starts with root's
    shim = start(tmp_path)
    conn, _, fds = accept(monitor)
    try:
        placeholder = wait_for_placeholder(shim.pid)
        for pid in (shim.pid, placeholder):
            status = privileges.status_of(pid)
            assert status == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0,
                              "NoNewPrivs": 1}, (pid, status)
        shim.send_signal(signal.SIGUSR2)
        assert shimwire.decode(conn.recv(4096).splitlines()[0]) == {"signal": signal.SIGUSR2}
        conn.sendall(shimwire.encode({"exit": 3}))
        shim.wait(timeout=20)
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
    assert shim.returncode == 3


def wait_for_placeholder(shim: int, timeout: float = 20.0) -> int:
    """The shim's placeholder child once it runs `sleep` (it sets itself up beside the shim)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{shim}/task/{shim}/children") as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmd:
                    if cmd.read().startswith(shimproc.PLACEHOLDER_TITLE.encode()):
                        return int(pid)
        time.sleep(0.01)
    raise AssertionError(f"shim {shim} started no placeholder")
