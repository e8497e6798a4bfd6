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
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir(exist_ok=True)
    argv = ShimSpec(tmp_path / "shim.sock", "ctr", str(rootfs),
                    **spec).argv()  # type: ignore[arg-type]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def accept(monitor: socket.socket) -> tuple[socket.socket, dict[str, object], list[int]]:
    conn, _ = monitor.accept()
    conn.settimeout(20)
    data, fds = shimwire.recv_with_fds(conn)
    return conn, shimwire.decode(data.split(b"\n")[0]), fds


@contextlib.contextmanager
def attached(monitor: socket.socket) -> Iterator[tuple[socket.socket, list[int]]]:
    """A shim's attach, as the monitor takes it; its connection and the monitor's copies of the
    shim's stdio are closed at the end whatever happened (the pipes end with the shim's own)."""
    conn, _, fds = accept(monitor)
    try:
        yield conn, fds
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()


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
    with attached(monitor) as (conn, _):
        shim.send_signal(signal.SIGUSR1)
        shim.send_signal(signal.SIGTERM)
        got = b""
        while got.count(b"\n") < 2:
            got += conn.recv(4096)
        assert [shimwire.decode(line) for line in got.splitlines()] == [
            {"signal": signal.SIGUSR1}, {"signal": signal.SIGTERM}]
        conn.sendall(shimwire.encode({"exit": 128 + signal.SIGTERM}))
        shim.wait(timeout=20)
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

    def hide(rootfs: str) -> None:
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
                          "--rootfs", str(tmp_path), "--netns", str(path)])
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
    with attached(monitor) as (conn, _):
        placeholder = wait_for_placeholder(shim.pid)
        for pid in (shim.pid, placeholder):
            status = privileges.status_of(pid)
            assert status == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0,
                              "NoNewPrivs": 1}, (pid, status)
        shim.send_signal(signal.SIGUSR2)
        assert shimwire.decode(conn.recv(4096).splitlines()[0]) == {"signal": signal.SIGUSR2}
        conn.sendall(shimwire.encode({"exit": 3}))
        shim.wait(timeout=20)
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


def in_namespace_of(pid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` run as an engine that joins the pid's mount namespace runs it (podman cp and
    podman top do so): from the namespace's root."""
    return subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", *command],
                          capture_output=True, text=True, timeout=20)


def test_the_shims_mount_namespace_is_rooted_at_the_rootfs(tmp_path: Path,
                                                          monitor: socket.socket) -> None:
    """Whoever joins the shim's mount namespace lands in the container's rootfs, with the
    placeholder's /proc: writing there writes the rootfs, and no host file is reachable (podman
    cp into a running container wrote the host's / before). The shim itself keeps the host's
    tree (its interpreter, the monitor's socket)."""
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "marker").write_text("the container's\n")
    shim = start(tmp_path)
    with attached(monitor) as (conn, _):
        wait_for_placeholder(shim.pid)
        # the rootfs has no /bin: a command of the host's cannot even run there
        assert in_namespace_of(shim.pid, "/bin/sh", "-c", "echo x").returncode != 0
        # what an engine does there: read and write files from the namespace's root
        python = sys.executable
        script = ("import os; print(sorted(os.listdir('/'))); print(open('/etc/marker').read(),"
                  " end=''); open('/etc/written', 'w').write('by an engine\\n');"
                  " print(open('/proc/1/cmdline').read().split(chr(0))[0]);"
                  " print(os.path.exists('/usr/bin'), os.path.exists('" + str(tmp_path) + "'))")
        joined = _python_in_namespace(shim.pid, python, script)
        lines = joined.splitlines()
        assert lines[0] == "['etc', 'proc']", lines
        assert lines[1] == "the container's"
        assert lines[2] == shimproc.PLACEHOLDER_TITLE
        assert lines[3] == "False False"  # nothing of the host's tree
        assert (rootfs / "etc" / "written").read_text() == "by an engine\n"
        # the shim's own root: the host's tree
        assert os.path.samefile(f"/proc/{shim.pid}/root/usr/bin", "/usr/bin")
        conn.sendall(shimwire.encode({"exit": 0}))
        shim.wait(timeout=20)
    assert shim.returncode == 0


def _python_in_namespace(pid: int, python: str, script: str) -> str:
    """Run `script` with the host's interpreter, then enter the namespace from inside it (the
    rootfs has no interpreter): setns as podman's copier does, then work from its root."""
    wrapper = (
        "import os\n"
        "from cocoon.linux import syscalls as sc\n"
        f"fd = os.open('/proc/{pid}/ns/mnt', os.O_RDONLY)\n"
        "sc.setns(fd, sc.CLONE_NEWNS)\n"
        f"exec({script!r})\n")
    result = subprocess.run([python, "-c", wrapper], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_rootfs_whose_proc_is_no_directory_gets_an_empty_root(tmp_path: Path,
                                                                 monitor: socket.socket) -> None:
    """A rootfs whose /proc is a symlink (out of the rootfs) still never shows the host."""
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "proc").symlink_to("/etc")
    shim = start(tmp_path)
    with attached(monitor) as (conn, _):
        wait_for_placeholder(shim.pid)
        script = "import os; print(sorted(os.listdir('/')), os.path.exists('/proc/1/cmdline'))"
        assert _python_in_namespace(shim.pid, sys.executable, script).strip() == \
            "['proc'] True"
        assert (rootfs / "proc").is_symlink()  # the rootfs itself untouched
        conn.sendall(shimwire.encode({"exit": 0}))
        shim.wait(timeout=20)


def test_a_missing_rootfs_fails_the_shim_before_it_attaches_with_the_reason(
        tmp_path: Path) -> None:
    """No shim left in the host's mount namespace: it says why and ends, unattached."""
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    from cocoon.runtime import shim as shim_module

    spec = ShimSpec(tmp_path / "shim.sock", "ctr", str(tmp_path / "missing"))
    pid, report = shim_module.spawn(spec)
    problem = shim_module.wait_attached(report)
    os.waitpid(pid, 0)
    assert problem is not None and "cannot root its mount namespace at the rootfs " \
        f"{tmp_path / 'missing'}" in problem, problem
