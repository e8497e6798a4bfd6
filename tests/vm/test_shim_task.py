"""The shim's Task service against a real VM, without containerd: the lifecycle rules, the stdio
relay through real fifos, and the events in contract order (received by a real ttrpc Events
server standing in for containerd).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2, empty_pb2

from cocoon.errors import RPCError
from cocoon.guest import assets
from cocoon.oci.default import default_spec
from cocoon.protocols.gen import cgroups_v2_metrics_pb2 as v2
from cocoon.protocols.gen import containerd_events_service_pb2 as evs
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.protocols.gen import containerd_types_task_pb2 as types
from cocoon.shim import address as addr
from cocoon.shim.events import Publisher
from cocoon.shim.pod import Pod
from cocoon.shim.task import TaskService
from cocoon.ttrpc.server import CallContext, Server
from cocoon.ttrpc.status import StatusCode

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                 reason="QEMU not installed")]

CTX: CallContext = None  # type: ignore[assignment]  # the handlers do not use their context
EVENTS_SERVICE = evs.DESCRIPTOR.services_by_name["Events"]


class Recorder:
    def __init__(self) -> None:
        self.topics: list[tuple[str, str]] = []

    async def Forward(self, request: evs.ForwardRequest, ctx: CallContext) -> empty_pb2.Empty:
        self.topics.append((request.envelope.topic, request.envelope.event.type_url))
        return empty_pb2.Empty()


@pytest.fixture
def place(vm_root: Path) -> Iterator[Path]:
    """The bundle and fifos; the VM goes to the leak-checked private `vm_root`."""
    base = Path(tempfile.mkdtemp(prefix="shimvm-", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _bundle(base: Path, args: list[str]) -> Path:
    bundle = base / "bundle"
    shutil.copytree(assets.ensure_busybox_rootfs(), bundle / "rootfs", symlinks=True)
    spec = default_spec()
    spec["process"].update(terminal=False, args=args)
    spec["root"] = {"path": "rootfs", "readonly": False}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _json_any(data: object) -> any_pb2.Any:
    return any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/x",
                       value=json.dumps(data).encode())


async def _code(call: object) -> int:
    try:
        await call  # type: ignore[misc]
    except RPCError as err:
        return err.code
    return StatusCode.OK


def test_task_lifecycle_rules_stdio_and_events(place: Path) -> None:
    bundle = _bundle(place, ["sh", "-c", "read line; echo got $line; exec sleep 1000"])
    stdin, stdout, exec_out = place / "in", place / "out", place / "exec-out"
    for fifo in (stdin, stdout, exec_out):
        os.mkfifo(fifo)

    async def scenario() -> list[tuple[str, str]]:
        recorder = Recorder()
        events_server = Server()
        events_server.register_service(EVENTS_SERVICE, recorder)
        await events_server.start_unix(place / "ttrpc.sock")
        publisher = Publisher(str(place / "ttrpc.sock"), "default")
        publisher.start()
        pod = Pod("c1", addr.vm_dir("/test.sock", "default", "c1"))
        stopped = asyncio.Event()
        tasks = TaskService(pod, publisher, stopped.set)
        out_reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
        in_writer = os.open(stdin, os.O_RDWR | os.O_NONBLOCK)
        try:
            created = await tasks.Create(api.CreateTaskRequest(
                id="c1", bundle=str(bundle), stdin=str(stdin), stdout=str(stdout)), CTX)
            assert created.pid == os.getpid()
            assert await _code(tasks.Create(api.CreateTaskRequest(id="c1", bundle=str(bundle)),
                                            CTX)) == StatusCode.ALREADY_EXISTS
            await tasks.Start(api.StartRequest(id="c1"), CTX)
            assert await _code(tasks.Start(api.StartRequest(id="c1"), CTX)) == \
                StatusCode.FAILED_PRECONDITION
            os.write(in_writer, b"hello\n")
            assert await _read_until(out_reader, b"got hello\n") == b"got hello\n"
            assert await _code(tasks.Delete(api.DeleteRequest(id="c1"), CTX)) == \
                StatusCode.FAILED_PRECONDITION

            process = {"args": ["sh", "-c", "echo from exec; exit 5"], "cwd": "/",
                       "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}}
            exec_reader = os.open(exec_out, os.O_RDONLY | os.O_NONBLOCK)
            await tasks.Exec(api.ExecProcessRequest(id="c1", exec_id="e1", stdout=str(exec_out),
                                                    spec=_json_any(process)), CTX)
            assert await _code(tasks.Exec(api.ExecProcessRequest(
                id="c1", exec_id="e1", spec=_json_any(process)), CTX)) == \
                StatusCode.ALREADY_EXISTS
            await tasks.Start(api.StartRequest(id="c1", exec_id="e1"), CTX)
            waited = await tasks.Wait(api.WaitRequest(id="c1", exec_id="e1"), CTX)
            assert waited.exit_status == 5 and waited.exited_at.seconds > 0
            assert await _read_until(exec_reader, b"from exec\n") == b"from exec\n"
            os.close(exec_reader)
            deleted = await tasks.Delete(api.DeleteRequest(id="c1", exec_id="e1"), CTX)
            assert deleted.exit_status == 5

            await tasks.Update(api.UpdateTaskRequest(
                id="c1", resources=_json_any({"pids": {"limit": 77}})), CTX)
            stats = await tasks.Stats(api.StatsRequest(id="c1"), CTX)
            metrics = v2.Metrics.FromString(stats.stats.value)
            assert metrics.pids.limit == 77 and metrics.pids.current >= 1
            pids = await tasks.Pids(api.PidsRequest(id="c1"), CTX)
            assert len(pids.processes) >= 1

            await tasks.Pause(api.PauseRequest(id="c1"), CTX)
            state = await tasks.State(api.StateRequest(id="c1"), CTX)
            assert state.status == types.PAUSED and state.stdin == str(stdin)
            await tasks.Resume(api.ResumeRequest(id="c1"), CTX)
            await tasks.Kill(api.KillRequest(id="c1", signal=signal.SIGKILL), CTX)
            waited = await tasks.Wait(api.WaitRequest(id="c1"), CTX)
            assert waited.exit_status == 137
            assert await _code(tasks.Kill(api.KillRequest(id="c1", signal=9), CTX)) == \
                StatusCode.NOT_FOUND
            assert await _code(tasks.Exec(api.ExecProcessRequest(
                id="c1", exec_id="e2", spec=_json_any(process)), CTX)) == \
                StatusCode.FAILED_PRECONDITION
            state = await tasks.State(api.StateRequest(id="c1"), CTX)
            assert (state.status, state.exit_status) == (types.STOPPED, 137)

            deleted = await tasks.Delete(api.DeleteRequest(id="c1"), CTX)
            assert deleted.exit_status == 137
            assert not tasks.containers and not pod.running
            assert not pod.layout.root.exists(), "the VM outlived the pod's last container"
            assert await _code(tasks.Connect(api.ConnectRequest(id="c1"), CTX)) == \
                StatusCode.NOT_FOUND
            await tasks.Shutdown(api.ShutdownRequest(id="c1"), CTX)
            assert stopped.is_set()
            await publisher.flush()
        finally:
            os.close(out_reader)
            os.close(in_writer)
            await tasks.close()
            await publisher.close()
            await events_server.close()
        return recorder.topics

    topics = asyncio.run(scenario())
    assert topics == [
        ("/tasks/create", "containerd.events.TaskCreate"),
        ("/tasks/start", "containerd.events.TaskStart"),
        ("/tasks/exec-added", "containerd.events.TaskExecAdded"),
        ("/tasks/exec-started", "containerd.events.TaskExecStarted"),
        ("/tasks/exit", "containerd.events.TaskExit"),
        ("/tasks/paused", "containerd.events.TaskPaused"),
        ("/tasks/resumed", "containerd.events.TaskResumed"),
        ("/tasks/exit", "containerd.events.TaskExit"),
        ("/tasks/delete", "containerd.events.TaskDelete"),
    ]


async def _read_until(fd: int, wanted: bytes, timeout: float = 30.0) -> bytes:
    data = b""
    async with asyncio.timeout(timeout):
        while wanted not in data:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                chunk = b""
            data += chunk
            if not chunk:
                await asyncio.sleep(0.05)
    return data
