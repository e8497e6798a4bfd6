"""The containerd shim's task service behind its real ttrpc server, for fuzzing (the hypothesis
tests and bench/fuzz.py share it).

`TaskTarget()` is `cocoon.shim.task.TaskService` as `cocoon.shim.daemon` serves it, for a pod
whose VM is not running (every agent call fails as it would then: a VM cannot run here in
microseconds), holding container c1 (running) and c2 (stopped). `exchange(data)` writes raw
bytes on a fresh connection, ends its sending side and reads every answer until the server
closes; `alive()` asks Connect on another connection. What counts as a crash:

- a handler that raised something that is not a Cocoon error (the server answers it INTERNAL
  and logs it with its traceback: `Crashes` collects such records);
- an answer that is not a ttrpc response frame with a decodable envelope;
- the server not closing a connection within `DEADLINE` after the client ended it, or not
  answering Connect on a new connection within it (a hang).

Nothing here may touch the host: the pod starts no VM, and a Create or Exec names paths
under a directory that does not exist (the caller runs in an empty working directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from cocoon.errors import SandboxError
from cocoon.protocols.gen import containerd_mount_pb2 as mount_pb2
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.protocols.gen import ttrpc_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.shim.address import PodRef
from cocoon.shim.events import Publisher
from cocoon.shim.process import RUNNING, STOPPED, ShimContainer, ShimProcess
from cocoon.shim.stdio import StdioPaths, open_stdio
from cocoon.shim.task import TaskService
from cocoon.ttrpc.frame import FrameDecoder, MessageType
from cocoon.ttrpc.server import Server
from cocoon.ttrpc.status import Status

TASK_SERVICE = api.DESCRIPTOR.services_by_name["Task"]
SERVICE = TASK_SERVICE.full_name
METHODS = [m.name for m in TASK_SERVICE.methods]
DEADLINE = 5.0
HEADER = struct.Struct(">IIBB")
NOWHERE = "/nonexistent/cocoon-fuzz"
IDS = ["c1", "c2", "nope", "", "../c1", "c1\n", "x" * 300]
EXEC_IDS = ["", "e1", "nope", "y" * 300]
EXEC_SPEC = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                        value=b'{"args": ["true"], "cwd": "/"}')


def seeds() -> list[tuple[str, Message]]:
    """Valid requests of every method, on known, unknown and broken ids."""
    out: list[tuple[str, Message]] = []
    for cid in IDS:
        for exec_id in EXEC_IDS[:2]:
            out += [("State", api.StateRequest(id=cid, exec_id=exec_id)),
                    ("Start", api.StartRequest(id=cid, exec_id=exec_id)),
                    ("Delete", api.DeleteRequest(id=cid, exec_id=exec_id)),
                    ("Kill", api.KillRequest(id=cid, exec_id=exec_id, signal=15, all=True)),
                    ("ResizePty", api.ResizePtyRequest(id=cid, exec_id=exec_id, width=80,
                                                       height=24)),
                    ("CloseIO", api.CloseIORequest(id=cid, exec_id=exec_id, stdin=True)),
                    ("Wait", api.WaitRequest(id=cid, exec_id=exec_id))]
        out += [("Pids", api.PidsRequest(id=cid)), ("Pause", api.PauseRequest(id=cid)),
                ("Resume", api.ResumeRequest(id=cid)), ("Stats", api.StatsRequest(id=cid)),
                ("Connect", api.ConnectRequest(id=cid)),
                ("Checkpoint", api.CheckpointTaskRequest(id=cid, path=NOWHERE)),
                ("Update", api.UpdateTaskRequest(id=cid, resources=any_pb2.Any(
                    type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                    value=b'{"pids": {"limit": 20}}'))),
                ("Exec", api.ExecProcessRequest(id=cid, exec_id="e2", spec=EXEC_SPEC,
                                                stdout=f"{NOWHERE}/stdout")),
                ("Create", api.CreateTaskRequest(
                    id=cid or "c9", bundle=f"{NOWHERE}/bundle", stdout=f"{NOWHERE}/stdout",
                    rootfs=[mount_pb2.Mount(type="bind", source=NOWHERE, options=["rbind"])]))]
    out.append(("Shutdown", api.ShutdownRequest(id="pod1")))
    return out


def request_frame(sid: int, method: str, payload: bytes, *, service: str = SERVICE,
                  timeout_nano: int = 2_000_000_000, flags: int = 0) -> bytes:
    data = ttrpc_pb2.Request(service=service, method=method, payload=payload,
                             timeout_nano=timeout_nano).SerializeToString()
    return HEADER.pack(len(data), sid, MessageType.REQUEST, flags) + data


class _NoVM:
    """A pod whose VM is not running: every call that needs the guest fails as it then does."""

    id = "pod1"
    cgroup = None
    memory_mib = 0

    def __init__(self) -> None:
        self.share = self

    @property
    def agent(self) -> AgentClient:
        raise SandboxError("pod pod1: its VM is not running", pod=self.id)

    async def ensure_started(self, *args: object) -> bool:
        raise SandboxError("pod pod1: no VM is started while fuzzing", pod=self.id)

    def guest_spec(self, *args: object) -> None:
        raise SandboxError("pod pod1: no VM", pod=self.id)

    def remove_container(self, container_id: str) -> None:
        return None

    async def stop(self, *args: object, **kwargs: object) -> None:
        return None


class Crashes(logging.Handler):
    """Log records with a traceback at ERROR or above: a handler raised what it should not."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)

    @contextlib.contextmanager
    def watching(self, name: str = "cocoon"):  # type: ignore[no-untyped-def]
        logger = logging.getLogger(name)
        saved = (logger.level, logger.propagate)
        logger.addHandler(self)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]


@dataclass
class Outcome:
    statuses: list[Status] = field(default_factory=list)
    closed_in_time: bool = True
    broken_answer: str = ""


class TaskTarget:
    def __init__(self) -> None:
        self.service = TaskService(_NoVM(), Publisher("", "default"),  # type: ignore[arg-type]
                                   lambda: None)
        for cid, status in (("c1", RUNNING), ("c2", STOPPED)):
            process = ShimProcess(cid, "", open_stdio(StdioPaths()), status=status)
            if status == STOPPED:
                process.record_exit(0)
                process.exited.set()
            self.service.containers[cid] = ShimContainer(cid, Path(NOWHERE), PodRef("pod1", True),
                                                         process)
        self.server = Server()
        self.server.register_service(TASK_SERVICE, self.service)

    async def exchange(self, data: bytes) -> Outcome:
        mine, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        serving = asyncio.create_task(self.server.serve_connection(reader, writer, peer="fuzz"))
        outcome = Outcome()
        r, w = await asyncio.open_unix_connection(sock=mine)
        try:
            w.write(data)
            with contextlib.suppress(ConnectionError):
                await w.drain()
            for _ in range(4):  # the calls' first steps run (most answer in them) ...
                await asyncio.sleep(0)
            with contextlib.suppress(ConnectionError, OSError):
                w.write_eof()  # ... then the client is done: the server must close
            answers = bytearray()
            try:
                async with asyncio.timeout(DEADLINE):
                    while chunk := await r.read(1 << 16):
                        answers += chunk
                    await serving
            except TimeoutError:
                outcome.closed_in_time = False
            except ConnectionError:
                pass
            self._read_answers(bytes(answers), outcome)
        finally:
            w.close()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        return outcome

    @staticmethod
    def _read_answers(data: bytes, outcome: Outcome) -> None:
        decoder = FrameDecoder()
        decoder.feed(data)
        for frame in decoder:
            if frame.type != MessageType.RESPONSE:
                outcome.broken_answer = f"frame type {frame.type} from the server"
                return
            try:
                response = ttrpc_pb2.Response.FromString(frame.data)
            except DecodeError as err:
                outcome.broken_answer = f"undecodable response: {err}"
                return
            outcome.statuses.append(Status.from_proto(response.status))

    async def alive(self) -> bool:
        """The server answers Connect for c1 on a new connection within `DEADLINE`."""
        mine, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        serving = asyncio.create_task(self.server.serve_connection(reader, writer, peer="fuzz"))
        r, w = await asyncio.open_unix_connection(sock=mine)
        try:
            w.write(request_frame(1, "Connect", api.ConnectRequest(id="c1").SerializeToString()))
            async with asyncio.timeout(DEADLINE):
                header = await r.readexactly(HEADER.size)
                length, sid, type_, _ = HEADER.unpack(header)
                body = await r.readexactly(length)
            response = ttrpc_pb2.Response.FromString(body)
            return (sid, type_, response.status.code) == (1, MessageType.RESPONSE, 0) and \
                api.ConnectResponse.FromString(response.payload).version.startswith("cocoon")
        except (TimeoutError, asyncio.IncompleteReadError, DecodeError, ConnectionError):
            return False
        finally:
            w.close()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    async def close(self) -> None:
        await self.server.close()
        await self.service.close()
