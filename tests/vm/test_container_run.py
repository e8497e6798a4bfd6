"""A foreground run through the whole OCI path: bundle -> runtime -> VM -> agent -> relay.

Each test is one `run` of a busybox bundle in a child process (so the test can feed stdin, read
output, signal the host process and read its exit status), and each such run boots its own VM,
as `cocoon run` does. After every run nothing may be left: no process, mount or directory
under the run's private VM directory and no container state.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from tests.vm.container_kit import (
    Place,
    make_bundle,
    run_foreground,
    start_foreground,
)

pytestmark = pytest.mark.vm


@pytest.fixture
def place(state_root: Path, vm_root: Path, tmp_path: Path) -> Place:
    """The framework's private roots: its leak check fails the test if anything is left."""
    return Place(state_root, vm_root, tmp_path)


def test_output_and_exit_code(place: Place) -> None:
    bundle = make_bundle(place.work / "b", ["sh", "-c", "echo out; echo err >&2; exit 7"])
    result = run_foreground(place.root, place.vm_root, bundle, "exit7")
    assert result.returncode == 7, result
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no line from the container within {timeout} s: {line!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


def test_sigterm_to_the_host_process_ends_the_container_with_143(place: Place) -> None:
    # the container's init is PID 1 of its pid namespace, which has no default signal
    # actions (under runc as here): it handles SIGTERM the way a container's init must
    bundle = make_bundle(place.work / "b", ["sh", "-c", "trap 'exit 143' TERM; echo ready; "
                                                        "while :; do sleep 0.1; done"])
    proc = start_foreground(place.root, place.vm_root, bundle, "term",
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert _read_line(proc, 120.0) == b"ready\n"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err


def test_stdin_and_stdout_arrive_intact(place: Place) -> None:
    """10 MB through `cat` and back, then 100 MB of file data, all checked by digest."""
    stdin_data = os.urandom(10 * 1000 * 1000)
    volume = place.work / "volume"
    volume.mkdir()
    big = volume / "big"
    with big.open("wb") as f:
        for _ in range(100):
            f.write(os.urandom(1000 * 1000))
    expected = hashlib.sha256(stdin_data + big.read_bytes()).hexdigest()

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(volume),
                               "options": ["rbind", "ro"]})

    bundle = make_bundle(place.work / "b", ["sh", "-c", "cat; cat /data/big"], edit)
    result = run_foreground(place.root, place.vm_root, bundle, "stdio", stdin=stdin_data)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(stdin_data) + 100 * 1000 * 1000
    assert result.stdout[:len(stdin_data)] == stdin_data
    assert hashlib.sha256(result.stdout).hexdigest() == expected


def test_terminal_through_a_host_pty(place: Place) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["terminal"] = True

    bundle = make_bundle(place.work / "b", ["sh", "-c",
                                            "tty; stty size; read line; echo got:$line; exit 3"],
                         edit)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        proc = start_foreground(place.root, place.vm_root, bundle, "tty", stdin=slave,
                                stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        output = b""
        sent = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child side closed
                    break
                if not chunk:
                    break
                output += chunk
            if not sent and output.count(b"\n") >= 2:
                os.write(master, b"hello\r")
                sent = True
            if proc.poll() is not None and not ready:
                break
        status = proc.wait(timeout=60)
    finally:
        os.close(master)
    text = output.decode(errors="replace").replace("\r", "")
    lines = [line for line in text.split("\n") if line]
    assert status == 3, text
    assert lines[0].startswith("/dev/pts/"), text
    assert lines[1] == "40 120", text  # the guest terminal follows the host's size
    assert "got:hello" in lines, text
