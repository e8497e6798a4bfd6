"""The shim binary's edge without a VM: `start` starts (or finds) the pod's daemon, the daemon
answers the Task service and logs to the `log` fifo, Shutdown ends it, `delete` cleans up after
a dead one. Real processes and sockets; the daemon's own sockets live in a private directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.errors import RPCError
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.shim import address as addr
from cocoon.shim.main import version_text
from cocoon.ttrpc.client import Client
from cocoon.ttrpc.status import StatusCode

TASK = "containerd.task.v2.Task"
CONTAINERD = "/run/test-containerd.sock"


@pytest.fixture
def place() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="shim-", dir="/tmp"))  # short: socket paths
    (base / "s").mkdir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _env(place: Path) -> dict[str, str]:
    return {**os.environ, "COCOON_SHIM_SOCKET_DIR": str(place / "s"),
            "COCOON_VM_DIR": str(place / "vm"), "TTRPC_ADDRESS": ""}


def _bundle(place: Path, name: str, annotations: dict[str, str]) -> Path:
    bundle = place / name
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2",
                                                    "annotations": annotations}))
    os.mkfifo(bundle / "log")
    return bundle


def _shim(place: Path, bundle: Path, cid: str, action: str,
          *extra: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "cocoon.shim.main", "-namespace", "k8s.io", "-address",
            CONTAINERD, "-publish-binary", "/usr/bin/containerd", "-id", cid, *extra, action]
    return subprocess.run(argv, cwd=bundle, env=_env(place), capture_output=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)


async def _call(url: str, method: str, request: object, response: type) -> object:
    client = await Client.connect_unix(addr.strip_unix(url), timeout=5.0)
    try:
        return await client.call(TASK, method, request, response, timeout=10.0)  # type: ignore
    finally:
        await client.close()


def _connect_unknown(url: str) -> None:
    response = asyncio.run(_call(url, "Connect", api.ConnectRequest(id="x"), api.ConnectResponse))
    raise AssertionError(f"Connect for an unknown id answered {response}")


def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still alive")


def _pid_on(socket_path: Path) -> int:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"cocoon.shim.daemon" in argv and str(socket_path).encode() in argv:
                return int(name)
    raise AssertionError(f"no shim daemon serves {socket_path}")


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "cocoon.shim.main", "-v"],
                            capture_output=True, text=True, check=True)
    assert result.stdout == version_text() and "containerd-shim-cocoon-v2" in result.stdout


def test_start_groups_a_pod_serves_tasks_and_shuts_down(place: Path) -> None:
    sandbox = _bundle(place, "sb", {addr.CONTAINER_TYPE: "sandbox", addr.SANDBOX_ID: "pod1"})
    app = _bundle(place, "app", {addr.CONTAINER_TYPE: "container", addr.SANDBOX_ID: "pod1"})
    log = os.open(sandbox / "log", os.O_RDONLY | os.O_NONBLOCK)  # containerd reads the log
    try:
        first = _shim(place, sandbox, "pod1", "start")
        assert first.returncode == 0, first.stderr
        url = first.stdout.decode()
        path = Path(addr.strip_unix(url))
        assert path.parent == place / "s" and path.is_socket()
        assert path.name == addr.socket_path(CONTAINERD, "k8s.io", "pod1").name
        assert (sandbox / "address").read_text() == url
        pid = _pid_on(path)

        second = _shim(place, app, "c2", "start")
        assert second.stdout.decode() == url, "the pod's second container got another shim"
        assert _pid_on(path) == pid

        with pytest.raises(RPCError) as unknown:
            _connect_unknown(url)
        assert unknown.value.code == StatusCode.NOT_FOUND
        with pytest.raises(RPCError) as checkpoint:
            asyncio.run(_call(url, "Checkpoint", api.CheckpointTaskRequest(id="pod1"),
                              api.CheckpointTaskRequest))
        # Checkpoint is served: a container the shim does not hold is not found
        assert checkpoint.value.code == StatusCode.NOT_FOUND
        assert "container pod1 does not exist" in str(checkpoint.value)
        other = _bundle(place, "other", {})
        with pytest.raises(RPCError, match="belongs to pod c3") as foreign:
            asyncio.run(_call(url, "Create", api.CreateTaskRequest(id="c3", bundle=str(other)),
                              api.CreateTaskResponse))
        assert foreign.value.code == StatusCode.FAILED_PRECONDITION

        asyncio.run(_call(url, "Shutdown", api.ShutdownRequest(id="pod1"), api.ShutdownRequest))
        _wait_gone(pid)
        assert not path.exists(), "the shim left its socket"
        ready, _, _ = select.select([log], [], [], 1.0)
        assert ready and b"shim for pod pod1 serving" in os.read(log, 65536)
    finally:
        os.close(log)


def test_delete_after_a_dead_shim(place: Path) -> None:
    bundle = _bundle(place, "b", {})
    started = _shim(place, bundle, "lone", "start")
    assert started.returncode == 0, started.stderr
    path = Path(addr.strip_unix(started.stdout.decode()))
    pid = _pid_on(path)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert path.exists()  # a killed shim cannot remove its socket

    result = _shim(place, bundle, "lone", "delete", "-bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    response = api.DeleteResponse.FromString(result.stdout)
    assert response.exit_status == 137 and response.exited_at.seconds > 0
    assert not path.exists()


def test_bad_invocations_fail_with_one_line(place: Path) -> None:
    bundle = _bundle(place, "b", {})
    result = _shim(place, bundle, "x", "frobnicate")
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "unknown action" in result.stderr.decode()
    (bundle / "config.json").unlink()
    result = _shim(place, bundle, "x", "start")
    assert result.returncode == 1 and b"config.json" in result.stderr
    assert not list((place / "s").iterdir())
