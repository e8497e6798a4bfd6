"""The asyncio ttrpc client: many concurrent calls multiplexed on one connection.

One read loop routes each response or data frame to the stream that waits for it. A call that is
cancelled or times out abandons its stream (the sans-IO layer then drops whatever the server
still sends on it), and a lost connection fails every pending call with `ConnectionLostError`
naming the peer, so nothing waits forever on a dead agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from cocoon.errors import (
    ConnectionLostError,
    OversizedMessageError,
    ProtocolError,
    RPCError,
    TtrpcError,
)
from cocoon.ttrpc.connection import ClientConnection, ClientEvent, ResponseReceived
from cocoon.ttrpc.inbox import Inbox
from cocoon.ttrpc.status import StatusCode

log = logging.getLogger("cocoon.ttrpc.client")

READ_SIZE = 256 * 1024
STREAM_FULL_TIMEOUT = 5.0

M = TypeVar("M", bound=Message)
Metadata = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


def metadata_pairs(metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
    if metadata is None:
        return ()
    if isinstance(metadata, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in metadata.items():
            values = [value] if isinstance(value, str) else list(value)
            pairs.extend((key, v) for v in values)
        return tuple(pairs)
    return tuple(metadata)


class ClientStream(Generic[M]):
    """One call's stream. Use `async with` so that an unfinished stream is abandoned cleanly.

    `recv()` returns the server's messages and None at the end; a non-OK status raises
    `RPCError`, an expired deadline `RPCError(DEADLINE_EXCEEDED)`.
    """

    def __init__(self, client: Client, stream_id: int, path: str, response_type: type[M],
                 server_streaming: bool, timeout: float | None, deadline: float | None,
                 inbox: Inbox[ClientEvent]) -> None:
        self._client = client
        self.stream_id = stream_id
        self.path = path
        self._response_type = response_type
        self._server_streaming = server_streaming
        self._timeout = timeout
        self._deadline = deadline
        self._inbox = inbox
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    async def send(self, message: Message) -> None:
        """Send one message on a client-streaming call."""
        if self._finished:
            raise TtrpcError(f"{self.path}: the call is finished", stream_id=self.stream_id)
        try:
            data = self._client._conn.send_data(self.stream_id, message.SerializeToString())
        except OversizedMessageError as err:
            raise RPCError(StatusCode.RESOURCE_EXHAUSTED, f"{self.path}: message too large: {err}",
                           length=err.length, limit=err.limit) from err
        self._client._write(data)
        await self._drain()

    async def close_send(self) -> None:
        """Tell the server that no more messages follow."""
        if self._finished:
            return
        self._client._write(self._client._conn.close_send(self.stream_id))
        await self._drain()

    async def recv(self) -> M | None:
        if self._finished:
            return None
        try:
            async with asyncio.timeout_at(self._deadline):
                event = await self._inbox.get()
        except TimeoutError:
            raise self._expired() from None
        except BaseException:
            self._abandon()
            raise
        if isinstance(event, ResponseReceived):
            self._abandon()
            if not event.status.ok:
                raise event.status.to_error(method=self.path, peer=self._client.peer,
                                            stream_id=self.stream_id)
            if self._server_streaming and not event.payload:
                return None
            return self._decode(event.payload)
        if event.end_stream:
            self._abandon()
            if event.data is None:
                return None
        # A no-data frame that does not close carries an empty message (as containerd's client
        # reads it).
        return self._decode(event.data or b"")

    async def aclose(self) -> None:
        """Abandon the call if it is not finished; the server's remaining output is dropped."""
        self._abandon()

    async def __aenter__(self) -> ClientStream[M]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._abandon()

    def __aiter__(self) -> AsyncIterator[M]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[M]:
        while (message := await self.recv()) is not None:
            yield message

    def _decode(self, data: bytes) -> M:
        try:
            return self._response_type.FromString(data)
        except DecodeError as err:
            name = self._response_type.DESCRIPTOR.full_name
            raise RPCError(StatusCode.INTERNAL, f"{self.path}: cannot decode the reply as "
                           f"{name}: {err}", peer=self._client.peer) from err

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout_at(self._deadline):
                await self._client._drain()
        except TimeoutError:
            raise self._expired() from None
        except BaseException:
            self._abandon()
            raise

    def _expired(self) -> RPCError:
        self._abandon()
        return RPCError(StatusCode.DEADLINE_EXCEEDED,
                        f"{self.path}: no answer within the {self._timeout}s deadline",
                        method=self.path, peer=self._client.peer, timeout=self._timeout)

    def _abandon(self) -> None:
        if not self._finished:
            self._finished = True
            self._client._abandon(self.stream_id)


class Client:
    """A ttrpc client over an asyncio stream pair; create it inside a running event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 peer: str | None = None) -> None:
        self.peer = peer or str(writer.get_extra_info("peername") or "unknown peer")
        self._reader = reader
        self._writer = writer
        self._conn = ClientConnection()
        self._inboxes: dict[int, Inbox[ClientEvent]] = {}
        self._lost: str | None = None
        self._lost_cause: BaseException | None = None
        self._read_task = asyncio.create_task(self._read_loop(), name=f"ttrpc-client {self.peer}")

    @classmethod
    async def connect_unix(cls, path: str | os.PathLike[str], *,
                           timeout: float | None = None) -> Client:
        path = os.fspath(path)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        except (OSError, TimeoutError) as err:
            raise TtrpcError(f"cannot connect to the ttrpc server at {path}: "
                             f"{err or 'timed out'}", path=path) from err
        return cls(reader, writer, peer=path)

    @property
    def closed(self) -> bool:
        return self._lost is not None

    @property
    def pending(self) -> int:
        """Streams waiting for the server."""
        return len(self._inboxes)

    async def call(self, service: str, method: str, request: Message, response_type: type[M], *,
                   timeout: float | None = None, metadata: Metadata | None = None) -> M:
        """A unary call. Raises RPCError for a non-OK status (DEADLINE_EXCEEDED on timeout)."""
        stream = self._open(service, method, request, response_type, client_streaming=False,
                            server_streaming=False, timeout=timeout, metadata=metadata)
        try:
            await stream._drain()
            response = await stream.recv()
        finally:
            stream._abandon()
        if response is None:  # only a streaming reply can end without a message
            raise RPCError(StatusCode.INTERNAL, f"{stream.path}: the server sent no reply",
                           peer=self.peer)
        return response

    async def open_stream(self, service: str, method: str, response_type: type[M], *,
                          request: Message | None = None, client_streaming: bool,
                          server_streaming: bool, timeout: float | None = None,
                          metadata: Metadata | None = None) -> ClientStream[M]:
        """Start a streaming call. `request` is the single request of a server-streaming call;
        a client-streaming call sends its messages with `send()` and ends with `close_send()`."""
        if client_streaming == (request is not None):
            raise TypeError("pass `request` exactly when the call does not stream requests")
        stream = self._open(service, method, request, response_type,
                            client_streaming=client_streaming, server_streaming=server_streaming,
                            timeout=timeout, metadata=metadata)
        await stream._drain()
        return stream

    def _open(self, service: str, method: str, request: Message | None, response_type: type[M],
              *, client_streaming: bool, server_streaming: bool, timeout: float | None,
              metadata: Metadata | None) -> ClientStream[M]:
        path = f"/{service}/{method}"
        loop = asyncio.get_running_loop()
        deadline = None
        timeout_nano = 0
        if timeout is not None:
            if timeout <= 0:
                raise RPCError(StatusCode.DEADLINE_EXCEEDED, f"{path}: deadline already passed",
                               method=path, timeout=timeout)
            deadline = loop.time() + timeout
            timeout_nano = max(1, int(timeout * 1e9))
        payload = b"" if request is None else request.SerializeToString()
        if self._lost is not None:
            raise self._lost_error()
        try:
            stream_id, data = self._conn.start_request(
                service, method, payload, timeout_nano=timeout_nano,
                metadata=metadata_pairs(metadata), client_streaming=client_streaming,
                server_streaming=server_streaming)
        except OversizedMessageError as err:
            raise RPCError(StatusCode.RESOURCE_EXHAUSTED, f"{path}: request too large: {err}",
                           length=err.length, limit=err.limit) from err
        inbox: Inbox[ClientEvent] = Inbox()
        self._inboxes[stream_id] = inbox
        self._writer.write(data)
        return ClientStream(self, stream_id, path, response_type, server_streaming, timeout,
                            deadline, inbox)

    def _write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost_error()
        if data:
            self._writer.write(data)

    async def _drain(self) -> None:
        if self._lost is not None:
            raise self._lost_error()
        try:
            await self._writer.drain()
        except ConnectionError as err:
            self._lose(f"write failed: {err}", err)
            raise self._lost_error() from err

    def _abandon(self, stream_id: int) -> None:
        inbox = self._inboxes.pop(stream_id, None)
        if inbox is not None:  # also frees the read loop if it waits for room in this inbox
            inbox.fail(TtrpcError(f"ttrpc stream {stream_id} was abandoned", peer=self.peer))
        if self._lost is None:
            self._writer.write(self._conn.abandon(stream_id))

    def _lost_error(self) -> ConnectionLostError:
        err = ConnectionLostError(f"ttrpc connection to {self.peer} lost: {self._lost}",
                                  peer=self.peer, reason=self._lost)
        err.__cause__ = self._lost_cause
        return err

    async def _read_loop(self) -> None:
        reason = "the server closed the connection"
        cause: BaseException | None = None
        try:
            while data := await self._reader.read(READ_SIZE):
                self._conn.receive_data(data)
                for event in self._conn.events():
                    await self._route(event)
        except ProtocolError as err:
            log.error("closing ttrpc connection to %s: %s", self.peer, err,
                      extra={"peer": self.peer, "evidence": err.evidence})
            reason, cause = f"protocol error: {err}", err
        except (ConnectionError, OSError) as err:
            reason, cause = f"read failed: {err}", err
        except asyncio.CancelledError:
            reason = "the client closed the connection"
            raise
        finally:
            self._lose(reason, cause)

    async def _route(self, event: ClientEvent) -> None:
        inbox = self._inboxes.get(event.stream_id)
        if inbox is None or inbox.put_nowait(event):
            return
        if not await inbox.put(event, STREAM_FULL_TIMEOUT):
            log.warning("ttrpc stream %d to %s: the caller stopped reading; abandoning it",
                        event.stream_id, self.peer)
            inbox.fail(RPCError(StatusCode.RESOURCE_EXHAUSTED,
                                f"stream {event.stream_id}: receive buffer full for "
                                f"{STREAM_FULL_TIMEOUT}s", peer=self.peer))
            self._abandon(event.stream_id)

    def _lose(self, reason: str, cause: BaseException | None) -> None:
        if self._lost is not None:
            return
        self._lost, self._lost_cause = reason, cause
        inboxes, self._inboxes = self._inboxes, {}
        if inboxes:
            log.info("ttrpc connection to %s lost with %d calls pending: %s", self.peer,
                     len(inboxes), reason)
        for inbox in inboxes.values():
            inbox.fail(self._lost_error())
        self._writer.close()

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionLostError. Idempotent."""
        self._lose("the client closed the connection", None)
        if not self._read_task.done():
            self._read_task.cancel()
        await asyncio.wait([self._read_task])
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class Stub:
    """A service's methods as attributes, from its descriptor.

    Unary: `await stub.Name(request, timeout=..., metadata=...)` returns the response.
    Streaming: `await stub.Name(request)` (server streaming) or `await stub.Name()` (client
    streaming) returns a `ClientStream`.
    """

    def __init__(self, client: Client, descriptor: ServiceDescriptor) -> None:
        self._client = client
        self._service = descriptor.full_name
        self._methods = {m.name: m for m in descriptor.methods}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = self._methods.get(name)
        if method is None:
            raise AttributeError(f"{self._service} has no method {name}")
        request_type = GetMessageClass(method.input_type)
        response_type = GetMessageClass(method.output_type)
        client = self._client
        service = self._service

        def check(request: Message | None) -> None:
            if request is not None and not isinstance(request, request_type):
                raise TypeError(f"{service}/{name} takes {request_type.__name__}, "
                                f"not {type(request).__name__}")

        if not (method.client_streaming or method.server_streaming):
            async def unary(request: Message, *, timeout: float | None = None,
                            metadata: Metadata | None = None) -> Message:
                check(request)
                return await client.call(service, name, request, response_type,
                                         timeout=timeout, metadata=metadata)
            return unary

        async def streaming(request: Message | None = None, *, timeout: float | None = None,
                            metadata: Metadata | None = None) -> ClientStream[Message]:
            check(request)
            return await client.open_stream(
                service, name, response_type, request=request,
                client_streaming=method.client_streaming,
                server_streaming=method.server_streaming, timeout=timeout, metadata=metadata)
        return streaming
