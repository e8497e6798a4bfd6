"""The monitor's agent proxy against a guest that misbehaves: it floods, stops reading, answers
streams it was never asked about, lies about sizes. The host side stays within its bounds, the
errors its clients see are typed, and another sandbox's proxy is not slowed down.

A guest here is a coroutine on the far end of a socket pair, speaking ttrpc frames through the
sans-IO `ServerConnection`; well-behaved guests are the fake agent's ttrpc server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoon.errors import CocoonError, ProtocolError, RPCError
from cocoon.protocols.gen import agent_pb2, ttrpc_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.proxy import AgentProxy
from cocoon.sandbox.proxyclient import ProxyClient
from cocoon.ttrpc.connection import RequestReceived, ServerConnection
from cocoon.ttrpc.frame import MAX_DATA_SIZE, Frame, encode_frame, encode_header
from cocoon.ttrpc.server import Server
from cocoon.ttrpc.status import Status, StatusCode
from tests.framework.fakeagent import SERVICES, FakeAgent

Guest = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)
    return asyncio.run(bounded())


def reply(message: Any) -> bytes:
    return ttrpc_pb2.Response(payload=message.SerializeToString()).SerializeToString()


@dataclass
class Sandbox:
    """A proxy whose agent channel leads to `guest`; `client()` connects a local client."""

    proxy: AgentProxy
    ended: asyncio.Task[str]
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    clients: list[AgentClient] = field(default_factory=list)

    async def client(self) -> AgentClient:
        mine, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        self.tasks.append(asyncio.create_task(self.proxy.serve_client(reader, writer)))
        r, w = await asyncio.open_unix_connection(sock=mine)
        client = AgentClient.over(r, w, peer="test client")
        self.clients.append(client)
        return client

    async def reason(self) -> str:
        """Why the agent connection ended; pending calls are failed as the monitor does."""
        reason = await self.ended
        await self.proxy.fail_pending(reason)
        return reason


@contextlib.asynccontextmanager
async def sandbox(guest: Guest, name: str = "sb") -> AsyncIterator[Sandbox]:
    proxy = AgentProxy(name)
    host, far = socket.socketpair()
    for sock in (host, far):  # small buffers, so that a guest that stops reading shows soon
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    gr, gw = await asyncio.open_unix_connection(sock=far)
    guest_task = asyncio.create_task(guest(gr, gw))
    pr, pw = await asyncio.open_unix_connection(sock=host)
    box = Sandbox(proxy, asyncio.create_task(proxy.run_agent(pr, pw)))
    await proxy.connected.wait()
    try:
        yield box
    finally:
        for client in box.clients:
            await client.close()
        await proxy.close_clients()
        gw.close()
        for task in [guest_task, box.ended, *box.tasks]:
            task.cancel()
        await asyncio.gather(guest_task, box.ended, *box.tasks, return_exceptions=True)


def fake_agent(agent: FakeAgent) -> Guest:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = Server()
        for descriptor in SERVICES:
            server.register_service(descriptor, agent.service(descriptor))
        try:
            await server.serve_connection(reader, writer, peer="host")
        finally:
            await server.close()
    return serve


def scripted(answer: Callable[[RequestReceived, asyncio.StreamWriter], Awaitable[None]]
             ) -> Guest:
    """A guest that reads requests properly and answers each with whatever `answer` writes."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection()
        while data := await reader.read(1 << 16):
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, RequestReceived):
                    await answer(event, writer)
        await asyncio.Event().wait()  # keep the channel open
    return serve


def raw(stream_id: int, type_: int, flags: int, data: bytes) -> bytes:
    return encode_frame(Frame(stream_id, type_, flags, data))


# --- a guest that answers streams nobody opened, or lies about sizes -------------------------

@pytest.mark.parametrize(("frame", "what"), [
    (raw(41, 2, 0, reply(agent_pb2.WaitProcessResponse())), "stream 41, which no client"),
    (raw(2, 3, 0, b""), "stream 2, which no client"),
    (raw(1, 1, 0, b""), "frame type 1"),
    (raw(1, 0x7F, 0, b""), "frame type 127"),
    (raw(1, 3, 0, b"x"), "data frame on a unary stream"),  # regression: broke the client
    (encode_header(MAX_DATA_SIZE + 1, 1, 2, 0), "4194305"),
    (encode_header(0xFFFF_FFFF, 1, 2, 0), "4294967295"),
])
def test_a_guest_breaking_the_protocol_fails_calls_with_unavailable(frame: bytes,
                                                                    what: str) -> None:
    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        writer.write(frame)  # a lying header comes alone: no payload byte is needed

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client = await box.client()
            call = asyncio.create_task(client.wait_process("c1"))
            reason = await box.reason()
            assert "protocol error from the guest" in reason and what in reason
            with pytest.raises(RPCError) as caught:
                await call
            assert caught.value.code == StatusCode.UNAVAILABLE
            assert not box.proxy._routes

    run(scenario())


def test_a_guest_lying_about_a_frame_size_costs_one_frame_of_memory() -> None:
    # a legal 4 MiB header whose payload never comes in full: the caller's deadline ends it
    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_header(MAX_DATA_SIZE, request.stream_id, 2, 0) + b"\0" * 1000)

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client = await box.client()
            with pytest.raises(RPCError) as caught:
                await client.call("WaitProcess", agent_pb2.WaitProcessRequest(),
                                  agent_pb2.WaitProcessResponse, timeout=0.3)
            assert caught.value.code == StatusCode.DEADLINE_EXCEEDED

    run(scenario())


def test_a_server_stream_closed_by_the_guest_leaves_no_route() -> None:
    # regression: a stream the agent finished with a closing data frame kept its route (and the
    # client's stream entry) until the client disconnected: unbounded on a long-lived client
    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        sid = request.stream_id
        if request.unary:
            writer.write(raw(sid, 2, 0, reply(agent_pb2.ReadStreamResponse())))
            return
        writer.write(raw(sid, 3, 0, b"\x0a\x01x") + raw(sid, 3, 5, b"")
                     + raw(sid, 3, 5, b"") + raw(sid, 2, 0, reply(agent_pb2.ReadStreamResponse())))

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client = await box.client()
            for _ in range(50):
                stream = await client.ttrpc.open_stream(
                    "grpc.AgentService", "ReadStdout", agent_pb2.ReadStreamResponse,
                    request=agent_pb2.ReadStreamRequest(), client_streaming=False,
                    server_streaming=True, timeout=5)
                async with stream:
                    assert [m.data async for m in stream] == [b"x"]
            assert await client.health() is False  # the client's connection still works
            assert not box.proxy._routes
            assert all(not c.streams for c in box.proxy._clients)

    run(scenario())


def test_late_frames_of_a_finished_stream_are_dropped_not_forwarded() -> None:
    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        sid = request.stream_id
        response = raw(sid, 2, 0, reply(agent_pb2.WaitProcessResponse(status=3)))
        writer.write(response + response + raw(sid, 3, 1, b"late"))

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client = await box.client()
            assert [await client.wait_process("c1") for _ in range(3)] == [3, 3, 3]
            assert not box.ended.done()

    run(scenario())


# --- a guest that floods, or stops reading ----------------------------------------------------

def test_a_flooding_guest_is_held_back_by_a_client_that_does_not_read() -> None:
    """The proxy reads the guest no faster than the client takes its frames: memory stays
    bounded by the socket buffers, and the client, once it gives up, frees the stream."""
    sent = 0

    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        chunk = raw(request.stream_id, 3, 0, b"\x0a\x80\x80\x04" + b"x" * (64 << 10))
        for _ in range(2000):  # 128 MiB if nothing held it back
            writer.write(chunk)
            await writer.drain()
            sent += 1

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client = await box.client()
            stream = await client.ttrpc.open_stream(
                "grpc.AgentService", "ReadStdout", agent_pb2.ReadStreamResponse,
                request=agent_pb2.ReadStreamRequest(), client_streaming=False,
                server_streaming=True, timeout=None)
            await asyncio.sleep(1.0)  # never read: 64 messages queue, then the socket fills
            assert sent < 200
            await stream.aclose()

    run(scenario())


def test_a_client_that_stops_reading_is_dropped_once_another_waits() -> None:
    """A client that stops reading holds the guest back only while nobody else needs the
    channel: once another client's call is in flight, the one that stopped reading is
    dropped (its connection closed, its stream failed) and the other is answered."""
    sent = 0

    async def flood(sid: int, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        chunk = raw(sid, 3, 0, b"\x0a\x80\x80\x04" + b"x" * (64 << 10))
        for _ in range(2000):  # 128 MiB if nothing took them
            writer.write(chunk)
            await writer.drain()
            sent += 1

    floods: list[asyncio.Task[None]] = []

    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        if request.method == "ReadStdout":  # flooded beside the other answers
            floods.append(asyncio.create_task(flood(request.stream_id, writer)))
        else:
            writer.write(raw(request.stream_id, 2, 0,
                             reply(agent_pb2.WaitProcessResponse(status=7))))

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            deaf, other = await box.client(), await box.client()
            stream = await deaf.ttrpc.open_stream(
                "grpc.AgentService", "ReadStdout", agent_pb2.ReadStreamResponse,
                request=agent_pb2.ReadStreamRequest(), client_streaming=False,
                server_streaming=True, timeout=None)
            await asyncio.sleep(0.5)  # never read: held back, as nobody else waits
            held = sent
            assert held < 200
            assert box.proxy._clients and len(box.proxy._routes) == 1
            started = time.monotonic()
            assert await other.wait_process("c1", timeout=10.0) == 7
            assert time.monotonic() - started < 5.0
            assert [await other.wait_process("c1", timeout=10.0) for _ in range(5)] == [7] * 5
            assert len(box.proxy._clients) == 1  # the deaf one went, with its route
            assert not box.proxy._routes
            with pytest.raises((CocoonError, ConnectionError)):
                async for _ in stream:
                    pass
            assert not box.ended.done()  # the guest's channel carries on
            for task in floods:
                task.cancel()

    run(scenario())


def test_an_undecodable_response_fails_that_call_alone() -> None:
    """A response envelope that is not protobuf fails the call it answers (INTERNAL, named);
    forwarded, it would have broken the client's connection and every call on it."""
    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        ask = agent_pb2.WaitProcessRequest.FromString(request.payload)
        if ask.container_id == "liar":
            writer.write(raw(request.stream_id, 2, 0, b"\xff\xff\xff not protobuf"))
        else:
            await asyncio.sleep(0.2)  # answered after the broken one
            writer.write(raw(request.stream_id, 2, 0,
                             reply(agent_pb2.WaitProcessResponse(status=4))))

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client, bystander = await box.client(), await box.client()
            first = asyncio.create_task(client.wait_process("c1", timeout=10.0))
            second = asyncio.create_task(bystander.wait_process("c1", timeout=10.0))
            await asyncio.sleep(0.05)
            with pytest.raises(RPCError) as caught:
                await client.wait_process("liar", timeout=10.0)
            assert caught.value.code == StatusCode.INTERNAL
            assert "sb: the guest's response could not be decoded" in str(caught.value)
            assert await first == 4 and await second == 4
            assert await client.wait_process("c2", timeout=10.0) == 4  # the connection works
            assert not box.ended.done()
            assert not box.proxy._routes

    run(scenario())


def test_a_guest_that_stops_reading_fails_calls_by_their_deadline_only() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        async with sandbox(deaf) as box, sandbox(fake_agent(FakeAgent()), "other") as other:
            client = await box.client()
            calls = [asyncio.create_task(client.write_stdin("c1", "", b"x" * (1 << 20),
                                                            timeout=1.0)) for _ in range(8)]
            healthy = await other.client()
            started = time.monotonic()
            for _ in range(20):  # another sandbox answers at once meanwhile
                assert await healthy.health() is False
            assert time.monotonic() - started < 1.0
            for call in calls:
                with pytest.raises(RPCError) as caught:
                    await call
                assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            assert not box.ended.done()

    run(scenario())


def test_a_broken_guest_does_not_disturb_another_sandbox() -> None:
    async def flood_then_break(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        for _ in range(200):
            writer.write(raw(request.stream_id, 3, 0, b"x" * 4096))
        writer.write(raw(request.stream_id + 100, 2, 0, b""))

    async def scenario() -> None:
        agent = FakeAgent(replies={"WaitProcess": agent_pb2.WaitProcessResponse(status=7)})
        async with sandbox(scripted(flood_then_break)) as bad, \
                sandbox(fake_agent(agent), "good") as good:
            victim, bystander = await bad.client(), await good.client()
            call = asyncio.create_task(victim.wait_process("c1"))
            assert [await bystander.wait_process("c1") for _ in range(20)] == [7] * 20
            assert "protocol error" in await bad.reason()
            with pytest.raises(RPCError):
                await call
            assert await bystander.wait_process("c1") == 7

    run(scenario())


# --- any bytes at all -------------------------------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.tuples(st.sampled_from([1, 3, 5, 7, 9, 0, 2, 0xFFFF_FFFF]),
                                 st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64)),
                       max_size=30))
def test_any_frames_from_the_guest_are_forwarded_or_refused(
        frames: list[tuple[int, int, int, bytes]]) -> None:
    """Whatever the guest sends on whatever stream: a ProtocolError or a forwarded frame, and
    the routes of finished streams are gone."""
    async def scenario() -> None:
        proxy = AgentProxy("fuzz")
        proxy._agent_writer = _Sink()  # type: ignore[assignment]
        client = ProxyClient("c", _Sink())  # type: ignore[arg-type]
        request = ttrpc_pb2.Request(service="grpc.AgentService", method="X").SerializeToString()
        for sid in (1, 3, 5):
            await proxy._from_client(client, Frame(sid, 1, 0, request))
        finished: set[int] = set()
        for sid, type_, flags, data in frames:
            try:
                await proxy._from_agent(Frame(sid, type_, flags, data))
            except ProtocolError:
                break
            except CocoonError as err:  # pragma: no cover - the assertion names it
                raise AssertionError(f"untyped refusal {err!r}") from err
            if type_ == 2 or flags & 1:
                finished.add(sid)
        assert not finished & set(proxy._routes)
        assert set(client.streams.values()) == set(proxy._routes)

    run(scenario())


def test_a_guest_answer_names_the_status_it_failed_with() -> None:
    # the status of a refused call travels as is, codes unknown to us included
    async def answer(request: RequestReceived, writer: asyncio.StreamWriter) -> None:
        status = Status(99, "no such thing\nsecond line").to_proto()
        writer.write(raw(request.stream_id, 2, 0,
                         ttrpc_pb2.Response(status=status).SerializeToString()))

    async def scenario() -> None:
        async with sandbox(scripted(answer)) as box:
            client = await box.client()
            with pytest.raises(RPCError) as caught:
                await client.wait_process("c1")
            assert caught.value.code == 99

    run(scenario())
