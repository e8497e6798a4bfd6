"""The proxy: many local ttrpc clients multiplexed onto the one agent channel of a VM.

It works on frames, not messages: a request from a client gets a fresh stream id on the agent
channel, and every later frame of that stream (data either way, the response) is rewritten back
and forth. Nothing from the guest is believed: a frame for a stream the proxy never opened, an
even stream id, an unknown type or a broken header is a protocol error that drops the agent
connection (logged); pending callers get UNAVAILABLE and the owner decides whether to reconnect.

Each client gets its frames through a bounded queue of its own (`proxyclient`). A client that
stops reading fills it; then the proxy stops reading the guest (holding a flooding guest back)
only while no other client has a call in flight. Once another one does, or asks, the client
that stopped reading is dropped (its connection closed, so its calls fail) and the channel
moves on: one client cannot stall the sandbox for the others. The monitor's own client is
never dropped. A response whose envelope cannot be decoded fails that call alone (INTERNAL),
where forwarded it would break the client's whole connection.

Requests for `LOCAL_SERVICE` are answered by the owner (the sandbox monitor) instead of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf.message import DecodeError

from cocoon.errors import CocoonError, ProtocolError
from cocoon.protocols.gen import ttrpc_pb2
from cocoon.sandbox.proxyclient import QUEUE_BYTES, ProxyClient
from cocoon.ttrpc.frame import (
    MAX_DATA_SIZE,
    MAX_STREAM_ID,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    encode_frame,
)
from cocoon.ttrpc.status import Status, StatusCode

logger = logging.getLogger("cocoon.sandbox.proxy")

LOCAL_SERVICE = "cocoon.Monitor"
READ_CHUNK = 256 * 1024

# (method, request payload) -> response payload; raise to answer an error status
LocalHandler = Callable[[str, bytes], Awaitable[bytes]]


async def frames(reader: asyncio.StreamReader) -> AsyncIterator[Frame]:
    """The frames of a byte stream until its end; ProtocolError when it breaks the framing."""
    decoder = FrameDecoder()
    while data := await reader.read(READ_CHUNK):
        decoder.feed(data)
        for frame in decoder:
            yield frame


def response_frame(stream_id: int, status: Status, payload: bytes = b"") -> bytes:
    message = ttrpc_pb2.Response(status=status.to_proto(), payload=payload)
    return encode_frame(Frame(stream_id, MessageType.RESPONSE, 0, message.SerializeToString()))


class AgentProxy:
    """Routes frames between local clients and one agent connection at a time."""

    def __init__(self, sandbox_id: str, local: LocalHandler | None = None) -> None:
        self.sandbox_id = sandbox_id
        self.local = local
        self._agent_writer: asyncio.StreamWriter | None = None
        self._agent_lock = asyncio.Lock()
        # agent stream id -> (client, its id, unary)
        self._routes: dict[int, tuple[ProxyClient, int, bool]] = {}
        self._next_id = 1
        self._clients: set[ProxyClient] = set()
        self._wake = asyncio.Event()  # a client's queue shrank, one went, or a call came in
        self._failure: str | None = None
        self._client_count = 0
        self.connected = asyncio.Event()

    # --- the agent side ----------------------------------------------------------------------

    async def run_agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Carry one agent connection until it ends; return why it ended.

        Calls still in flight are left pending: the owner knows best why the channel ended
        (QEMU died, the guest misbehaved) and answers them with `fail_pending(reason)`.
        """
        self._agent_writer = writer
        self._failure = None
        self.connected.set()
        reason = "the agent channel closed"
        try:
            async for frame in frames(reader):
                await self._from_agent(frame)
        except ProtocolError as err:
            reason = f"protocol error from the guest: {err}"
            logger.error("sandbox %s: dropping the agent connection: %s", self.sandbox_id, err)
        except (ConnectionError, OSError) as err:
            reason = f"the agent channel failed: {err}"
        finally:
            self.connected.clear()
            self._agent_writer = None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return reason

    async def _from_agent(self, frame: Frame) -> None:
        sid = frame.stream_id
        if frame.type not in (MessageType.RESPONSE, MessageType.DATA):
            raise ProtocolError(f"agent sent frame type {frame.type} on stream {sid}",
                                stream_id=sid)
        if sid % 2 == 0 or sid >= self._next_id:
            raise ProtocolError(f"agent sent a frame on stream {sid}, which no client opened",
                                stream_id=sid)
        route = self._routes.get(sid)
        if route is None:
            return  # the client went away or the stream ended; its late frames are dropped
        client, client_sid, unary = route
        if frame.type == MessageType.DATA and (unary or (
                frame.flags & Flags.NO_DATA and frame.data)):
            # forwarded, it would break the connection of the client, with all its other calls
            what = "on a unary stream" if unary else "flagged no-data with bytes"
            raise ProtocolError(f"agent sent a data frame {what} (stream {sid})", stream_id=sid)
        # a response or a closing data frame finishes the stream: the route goes (a server-
        # streaming call ends with the latter, and a client may make millions of them)
        if frame.type == MessageType.RESPONSE or frame.flags & Flags.REMOTE_CLOSED:
            del self._routes[sid]
            client.streams.pop(client_sid, None)
        if frame.type == MessageType.RESPONSE:
            try:
                ttrpc_pb2.Response.FromString(frame.data)
            except DecodeError as err:
                logger.warning("sandbox %s: undecodable response on stream %d: %s",
                               self.sandbox_id, sid, err)
                await self._deliver(client, response_frame(client_sid, Status(
                    StatusCode.INTERNAL, f"sandbox {self.sandbox_id}: the guest's response "
                    f"could not be decoded ({err})")))
                return
        await self._deliver(client, encode_frame(Frame(client_sid, frame.type, frame.flags,
                                                       frame.data)))

    async def _deliver(self, client: ProxyClient, data: bytes, wait: bool = True) -> None:
        """Queue `data` for `client`. While its queue is full: wait for room (which holds the
        guest back) if no other client has a call in flight, else drop the client. Without
        `wait`, a full queue drops it at once."""
        while not client.fits(len(data)):
            if client.closed:
                return
            if client.droppable and (not wait or self._others_waiting(client)):
                self._drop(client)
                return
            self._wake.clear()
            await self._wake.wait()
        client.put(data)

    def _others_waiting(self, client: ProxyClient) -> bool:
        return any(other is not client for other, _, _ in self._routes.values())

    def _drop(self, client: ProxyClient) -> None:
        logger.warning("sandbox %s: dropping %s: it stopped reading its responses (%d KiB "
                       "queued) while other clients wait", self.sandbox_id, client.name,
                       QUEUE_BYTES >> 10)
        self._forget(client)
        client.drop()

    def _forget(self, client: ProxyClient) -> None:
        self._clients.discard(client)
        for client_sid, agent_sid in list(client.streams.items()):
            self._routes.pop(agent_sid, None)
            client.streams.pop(client_sid, None)
        self._wake.set()

    async def fail_pending(self, reason: str) -> None:
        """Answer every call in flight with UNAVAILABLE naming the reason."""
        self._failure = reason
        routes, self._routes = self._routes, {}
        status = Status(StatusCode.UNAVAILABLE, f"sandbox {self.sandbox_id}: {reason}")
        for client, client_sid, _ in routes.values():
            client.streams.pop(client_sid, None)
            await self._deliver(client, response_frame(client_sid, status), wait=False)

    async def _to_agent(self, data: bytes) -> None:
        async with self._agent_lock:
            writer = self._agent_writer
            if writer is None:
                raise ConnectionError("no agent connection")
            writer.write(data)
            await writer.drain()

    def _allocate(self) -> int:
        sid = self._next_id
        self._next_id += 2
        if self._next_id > MAX_STREAM_ID:
            raise ProtocolError("agent stream ids exhausted")
        return sid

    # --- the client side -----------------------------------------------------------------------

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           droppable: bool = True) -> None:
        """Carry one local client until it leaves (or is dropped); `droppable` false for the
        owner's own client, which is never dropped for being slow."""
        self._client_count += 1
        client = ProxyClient(f"client-{self._client_count}", writer, droppable=droppable,
                             wake=self._wake)
        self._clients.add(client)
        pump = asyncio.create_task(client.pump(), name=f"proxy-{client.name}")
        try:
            async for frame in frames(reader):
                await self._from_client(client, frame)
        except ProtocolError as err:
            logger.warning("sandbox %s: closing %s: %s", self.sandbox_id, client.name, err)
        except (ConnectionError, OSError):
            pass
        finally:
            pump.cancel()
            self._forget(client)
            client.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _from_client(self, client: ProxyClient, frame: Frame) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid == 0:
            raise ProtocolError(f"client used stream id {sid}")
        if frame.type == MessageType.REQUEST:
            if sid in client.streams:
                raise ProtocolError(f"client reused stream id {sid}")
            if await self._maybe_local(client, frame):
                return
            if self._agent_writer is None:
                reason = self._failure or "the agent is not connected"
                await self._deliver(client, response_frame(sid, Status(
                    StatusCode.UNAVAILABLE, f"sandbox {self.sandbox_id}: {reason}")))
                return
            agent_sid = self._allocate()
            self._routes[agent_sid] = (client, sid, not frame.flags & (
                Flags.REMOTE_CLOSED | Flags.REMOTE_OPEN))
            client.streams[sid] = agent_sid
            self._wake.set()  # a delivery held back for a client that stopped reading looks again
        elif frame.type == MessageType.DATA:
            agent_sid = client.streams.get(sid, 0)
            if not agent_sid:
                return  # data for a stream that ended (e.g. after a failure): dropped
        else:
            raise ProtocolError(f"client sent frame type {frame.type}")
        try:
            await self._to_agent(encode_frame(Frame(agent_sid, frame.type, frame.flags,
                                                    frame.data)))
        except (ConnectionError, OSError) as err:
            if self._routes.pop(agent_sid, None) is not None:
                client.streams.pop(sid, None)
                await self._deliver(client, response_frame(sid, Status(
                    StatusCode.UNAVAILABLE, f"sandbox {self.sandbox_id}: {err}")))

    async def _maybe_local(self, client: ProxyClient, frame: Frame) -> bool:
        if self.local is None:
            return False
        try:
            request = ttrpc_pb2.Request.FromString(frame.data)
        except DecodeError as err:
            raise ProtocolError(f"undecodable request on stream {frame.stream_id}") from err
        if request.service != LOCAL_SERVICE:
            return False
        if frame.flags & Flags.REMOTE_OPEN:
            status = Status(StatusCode.UNIMPLEMENTED, "monitor calls are unary")
            await self._deliver(client, response_frame(frame.stream_id, status))
            return True
        try:
            payload = await self.local(request.method, request.payload)
            await self._deliver(client, response_frame(frame.stream_id, Status(), payload))
        except Exception as err:
            if not isinstance(err, CocoonError):
                logger.exception("monitor call %s failed", request.method)
            await self._deliver(client, response_frame(frame.stream_id,
                                                       Status.from_exception(err)))
        return True

    async def close_clients(self) -> None:
        for client in list(self._clients):
            client.writer.close()


__all__ = ["LOCAL_SERVICE", "MAX_DATA_SIZE", "AgentProxy", "response_frame"]
