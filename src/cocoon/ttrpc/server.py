"""The asyncio ttrpc server: services from protobuf descriptors, served over any byte stream.

`serve_connection()` takes any asyncio (reader, writer) pair, so the agent serves its
virtio-serial port with the same code that serves unix sockets on the host. Each call runs in
its own task (many calls are multiplexed on one connection); handlers stay thin and raise
Cocoon errors, which `Status.from_exception()` maps to gRPC codes at this edge. A peer that
breaks the protocol loses its connection, and only that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from cocoon.errors import (
    CocoonError,
    ConnectionLostError,
    OversizedMessageError,
    ProtocolError,
    RPCError,
    TtrpcError,
)
from cocoon.ttrpc.connection import DataReceived, RequestReceived, ServerConnection
from cocoon.ttrpc.inbox import Inbox
from cocoon.ttrpc.status import Status, StatusCode

log = logging.getLogger("cocoon.ttrpc.server")

READ_SIZE = 256 * 1024
STREAM_FULL_TIMEOUT = 5.0

Handler = Callable[[Any, "CallContext"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One method of a registered service, with the message classes found from its descriptor."""

    service: str
    name: str
    request_type: type[Message]
    response_type: type[Message]
    client_streaming: bool
    server_streaming: bool
    handler: Handler | None

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def decode(message_type: type[Message], data: bytes, what: str) -> Message:
    try:
        return message_type.FromString(data)
    except DecodeError as err:
        name = message_type.DESCRIPTOR.full_name
        raise RPCError(StatusCode.INVALID_ARGUMENT,
                       f"cannot decode {what} as {name}: {err}") from err


class CallContext:
    """What a handler knows about its call; streaming methods send and receive through it.

    For a client-streaming method the handler's `request` argument is None and the client's
    messages come from `recv()` (None at the end) or `async for`.
    """

    def __init__(self, method: MethodInfo, stream_id: int, metadata: dict[str, list[str]],
                 deadline: float | None, conn: _ServedConnection,
                 inbox: Inbox[DataReceived] | None) -> None:
        self.method = method
        self.stream_id = stream_id
        self.metadata = metadata
        self.deadline = deadline  # event-loop time, or None
        self.peer = conn.peer
        self._conn = conn
        self._inbox = inbox
        self._input_ended = inbox is None

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    async def send(self, message: Message) -> None:
        """Send one message of a server-streaming reply."""
        info = self.method
        if not info.server_streaming:
            raise TtrpcError(f"{info.path} does not stream its responses", method=info.path)
        if not isinstance(message, info.response_type):
            raise TypeError(f"{info.path} sends {info.response_type.__name__}, "
                            f"not {type(message).__name__}")
        await self._conn.send(self._conn.conn.send_data(self.stream_id,
                                                        message.SerializeToString()))

    async def recv(self) -> Message | None:
        """The client's next message, or None once it has closed its side."""
        if not self.method.client_streaming:
            raise TtrpcError(f"{self.method.path} does not take a stream", method=self.method.path)
        while not self._input_ended:
            assert self._inbox is not None
            event = await self._inbox.get()
            self._input_ended = event.end_stream
            if event.data is not None:
                return decode(self.method.request_type, event.data, "a streamed request")
        return None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while (message := await self.recv()) is not None:
            yield message


@dataclass(eq=False)
class _Call:
    ctx: CallContext
    inbox: Inbox[DataReceived] | None
    task: asyncio.Task[None] | None = None
    abort: Status | None = None  # set before we cancel the task ourselves


class _ServedConnection:
    """One accepted connection: a read loop feeding a ServerConnection, and a task per call."""

    def __init__(self, server: Server, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.conn = ServerConnection()
        self.calls: dict[int, _Call] = {}
        self.done = asyncio.Event()
        self.error: ProtocolError | None = None
        self._read_task: asyncio.Task[None] | None = None

    async def run(self) -> ProtocolError | None:
        self._read_task = asyncio.create_task(self._read_loop(), name=f"ttrpc-serve {self.peer}")
        try:
            await asyncio.wait([self._read_task])
        finally:
            self._read_task.cancel()
            await asyncio.wait([self._read_task])
            await self._cancel_calls(None)
            self.writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)
            self.done.set()
        return self.error

    async def shutdown(self, grace: float) -> None:
        """Let calls finish for `grace` seconds, answer the rest UNAVAILABLE, then disconnect."""
        tasks = [call.task for call in self.calls.values() if call.task is not None]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        await self._cancel_calls(Status(StatusCode.UNAVAILABLE, "ttrpc server shutting down"))
        if self._read_task is not None:
            self._read_task.cancel()
        await self.done.wait()

    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionLostError(f"ttrpc connection from {self.peer} is closed",
                                      peer=self.peer)
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError as err:
            raise ConnectionLostError(f"ttrpc connection from {self.peer} lost: {err}",
                                      peer=self.peer) from err

    async def _read_loop(self) -> None:
        try:
            while data := await self.reader.read(READ_SIZE):
                self.conn.receive_data(data)
                for event in self.conn.events():
                    if isinstance(event, RequestReceived):
                        await self._start_call(event)
                    elif isinstance(event, DataReceived):
                        await self._deliver(event)
            log.debug("ttrpc connection from %s closed by the peer", self.peer)
        except ProtocolError as err:
            self.error = err
            log.error("closing ttrpc connection from %s: %s", self.peer, err,
                      extra={"peer": self.peer, "evidence": err.evidence})
        except (ConnectionLostError, ConnectionError, OSError) as err:
            log.info("ttrpc connection from %s lost: %s", self.peer, err)

    async def _start_call(self, event: RequestReceived) -> None:
        info = self.server.method(event.service, event.method)
        refusal = self._refusal(event, info)
        if refusal is not None:
            log.debug("refused %s/%s from %s: %s", event.service, event.method, self.peer,
                      refusal.message)
            await self.send(self.conn.send_response(event.stream_id, refusal))
            return
        assert info is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + event.timeout_nano / 1e9 if event.timeout_nano else None
        inbox: Inbox[DataReceived] | None = None
        if info.client_streaming:
            inbox = Inbox()
            # The request frame may carry the first message; without remote-open it is also
            # the last (containerd/ttrpc sends an empty payload when it has no first message).
            first = event.payload or None
            if first is not None or not event.remote_open:
                inbox.put_nowait(DataReceived(event.stream_id, first, not event.remote_open))
        metadata: dict[str, list[str]] = {}
        for key, value in event.metadata:
            metadata.setdefault(key, []).append(value)
        ctx = CallContext(info, event.stream_id, metadata, deadline, self, inbox)
        call = _Call(ctx, inbox)
        self.calls[event.stream_id] = call
        call.task = asyncio.create_task(self._run_call(call, event.payload),
                                        name=f"ttrpc {info.path} #{event.stream_id}")

    def _refusal(self, event: RequestReceived, info: MethodInfo | None) -> Status | None:
        unimplemented = StatusCode.UNIMPLEMENTED
        if info is None:
            if self.server.has_service(event.service):
                return Status(unimplemented, f"unknown method {event.service}/{event.method}")
            return Status(unimplemented, f"unknown service {event.service}")
        if info.handler is None:
            return Status(unimplemented, f"{info.path} is not implemented by this server")
        if self.server.closing:
            return Status(StatusCode.UNAVAILABLE, "ttrpc server shutting down")
        if event.timeout_nano < 0:
            return Status(StatusCode.DEADLINE_EXCEEDED, f"{info.path}: deadline already passed")
        streaming = info.client_streaming or info.server_streaming
        if streaming and event.unary:
            return Status(StatusCode.INVALID_ARGUMENT,
                          f"{info.path} is a streaming method but was called as unary")
        if event.remote_open and not info.client_streaming:
            return Status(StatusCode.INVALID_ARGUMENT,
                          f"{info.path} takes no client stream but the request opened one")
        return None

    async def _deliver(self, event: DataReceived) -> None:
        call = self.calls.get(event.stream_id)
        if call is None or call.inbox is None:
            return
        if not call.inbox.put_nowait(event) and not await call.inbox.put(event,
                                                                          STREAM_FULL_TIMEOUT):
            self._abort(call, Status(StatusCode.RESOURCE_EXHAUSTED,
                                     f"{call.ctx.method.path} stopped reading its input stream"))

    def _abort(self, call: _Call, status: Status) -> None:
        if call.task is not None and not call.task.done() and call.abort is None:
            call.abort = status
            call.task.cancel()

    async def _cancel_calls(self, status: Status | None) -> None:
        """Cancel every call; with a status they answer it, without (connection gone) they don't."""
        calls = list(self.calls.values())
        tasks = [call.task for call in calls if call.task is not None]
        for call in calls:
            if status is not None:
                self._abort(call, status)
            elif call.task is not None:
                call.task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for call in calls:
            # A task cancelled before its first step never ran its own cleanup.
            if self.calls.pop(call.ctx.stream_id, None) is not None and status is not None:
                with contextlib.suppress(ConnectionLostError, TtrpcError):
                    await self.send(self._answer(call.ctx.stream_id, status))

    async def _run_call(self, call: _Call, payload: bytes) -> None:
        ctx = call.ctx
        info = ctx.method
        sid = ctx.stream_id
        try:
            try:
                out = await self._invoke(call, payload)
            except asyncio.CancelledError:
                if call.abort is None:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                out = self._answer(sid, call.abort)
            except TimeoutError as err:
                loop = asyncio.get_running_loop()
                if ctx.deadline is not None and loop.time() >= ctx.deadline:
                    status = Status(StatusCode.DEADLINE_EXCEEDED, f"{info.path}: deadline exceeded")
                else:
                    status = self._failed(info, err)
                out = self._answer(sid, status)
            except Exception as err:
                out = self._answer(sid, self._failed(info, err))
            try:
                await self.send(out)
            except ConnectionLostError as err:
                log.debug("could not answer %s on %s: %s", info.path, self.peer, err)
        finally:
            self.calls.pop(sid, None)
            if call.inbox is not None:
                call.inbox.fail(TtrpcError(f"{info.path} is finished"))

    async def _invoke(self, call: _Call, payload: bytes) -> bytes:
        ctx = call.ctx
        info = ctx.method
        assert info.handler is not None
        async with asyncio.timeout_at(ctx.deadline):
            request = None if info.client_streaming else decode(info.request_type, payload,
                                                                "the request")
            result = await info.handler(request, ctx)
        if info.server_streaming:
            return self.conn.end_stream(ctx.stream_id)
        if not isinstance(result, info.response_type):
            raise TtrpcError(f"{info.path} handler returned {type(result).__name__}, "
                             f"expected {info.response_type.__name__}")
        try:
            return self.conn.send_response(ctx.stream_id, Status(), result.SerializeToString())
        except OversizedMessageError as err:
            raise RPCError(StatusCode.RESOURCE_EXHAUSTED, f"{info.path} response too large: {err}",
                           length=err.length, limit=err.limit) from err

    def _answer(self, sid: int, status: Status) -> bytes:
        return self.conn.send_response(sid, status)

    def _failed(self, info: MethodInfo, err: Exception) -> Status:
        status = Status.from_exception(err)
        if isinstance(err, RPCError):
            log.debug("%s answered %s", info.path, err)
        elif isinstance(err, CocoonError):
            log.warning("%s failed: %s", info.path, err, extra={"evidence": err.evidence})
        else:
            log.error("%s raised %s", info.path, status.message, exc_info=err)
        return status


class Server:
    """Registers services and serves connections until `close()`."""

    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], MethodInfo] = {}
        self._services: set[str] = set()
        self._connections: set[_ServedConnection] = set()
        self._listeners: list[tuple[asyncio.AbstractServer, str, int]] = []
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def has_service(self, name: str) -> bool:
        return name in self._services

    def method(self, service: str, name: str) -> MethodInfo | None:
        return self._methods.get((service, name))

    def register_service(self, descriptor: ServiceDescriptor, implementation: object) -> None:
        """Serve `descriptor` (e.g. `agent_pb2.DESCRIPTOR.services_by_name["AgentService"]`).

        Each method is served by the implementation's coroutine method of the same name;
        methods it lacks answer UNIMPLEMENTED.
        """
        service = descriptor.full_name
        if service in self._services:
            raise TtrpcError(f"ttrpc service {service} registered twice", service=service)
        methods = {}
        for method in descriptor.methods:
            handler = getattr(implementation, method.name, None)
            if handler is not None and not inspect.iscoroutinefunction(handler):
                raise TtrpcError(f"{type(implementation).__name__}.{method.name} must be an "
                                 "async method", service=service, method=method.name)
            methods[(service, method.name)] = MethodInfo(
                service, method.name, GetMessageClass(method.input_type),
                GetMessageClass(method.output_type), method.client_streaming,
                method.server_streaming, handler)
        self._methods.update(methods)
        self._services.add(service)

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               *, peer: str | None = None) -> ProtocolError | None:
        """Serve one connection until it closes; returns the protocol error that closed it."""
        if peer is None:
            peer = str(writer.get_extra_info("peername") or "unknown peer")
        served = _ServedConnection(self, reader, writer, peer)
        if self._closing:
            writer.close()
            return None
        self._connections.add(served)
        try:
            return await served.run()
        finally:
            self._connections.discard(served)

    async def start_unix(self, path: str | os.PathLike[str], mode: int = 0o600) -> None:
        """Listen on a unix socket, created with `mode` before anyone can connect."""
        path = os.fspath(path)
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmpdir = tempfile.mkdtemp(prefix=".ttrpc-", dir=os.path.dirname(os.path.abspath(path)))
        try:
            # Bind in a private directory, set the mode, then move into place: there is no
            # moment when the socket exists at `path` with looser permissions.
            staged = os.path.join(tmpdir, "s")
            sock.bind(staged)
            os.chmod(staged, mode)
            os.rename(staged, path)
            sock.listen(128)
            listener = await asyncio.start_unix_server(
                lambda r, w: self._accept(r, w, path), sock=sock)
        except OSError as err:
            sock.close()
            raise TtrpcError(f"cannot listen on {path}: {err}", path=path) from err
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(tmpdir)
        self._listeners.append((listener, path, os.stat(path).st_ino))
        log.debug("ttrpc server listening on %s", path)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      path: str) -> None:
        await self.serve_connection(reader, writer, peer=_unix_peer(path, writer))

    async def close(self, grace: float = 0.0) -> None:
        """Stop accepting, give in-flight calls `grace` seconds, answer the rest UNAVAILABLE,
        close every connection and remove the sockets this server created. Idempotent."""
        self._closing = True
        listeners, self._listeners = self._listeners, []
        for listener, path, inode in listeners:
            listener.close()
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
        await asyncio.gather(*(conn.shutdown(grace) for conn in list(self._connections)))
        for listener, _, _ in listeners:
            await listener.wait_closed()


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise TtrpcError(f"cannot listen on {path}: it exists and is not a socket", path=path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left behind by a server that died
        return
    except OSError as err:
        raise TtrpcError(f"cannot listen on {path}: {err}", path=path) from err
    finally:
        probe.close()
    raise TtrpcError(f"cannot listen on {path}: another server is listening there", path=path)


def _unix_peer(path: str, writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return path
    pid, uid, _ = struct.unpack("3i", creds)
    return f"{path} (pid {pid}, uid {uid})"
