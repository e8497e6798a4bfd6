"""The asyncio server over real unix sockets: dispatch, errors, deadlines, streams, misbehaving
peers and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConnectionLostError, RPCError, TtrpcError
from cocoon.protocols.gen import testing_pb2 as pb
from cocoon.ttrpc import server as server_module
from cocoon.ttrpc.client import Client
from cocoon.ttrpc.connection import ClientConnection, ResponseReceived
from cocoon.ttrpc.echo import SERVICE, EchoService
from cocoon.ttrpc.frame import Flags, Frame, MessageType, encode_frame, encode_header
from cocoon.ttrpc.server import CallContext, Server
from cocoon.ttrpc.status import StatusCode

ECHO = "cocoon.testing.Echo"


def run(coro: Coroutine[Any, Any, None], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def sock() -> Iterator[Path]:
    # Short, so that unix socket paths stay under the 108-byte limit.
    directory = tempfile.mkdtemp(prefix="ttrpc-", dir="/tmp")
    yield Path(directory) / "s.sock"
    shutil.rmtree(directory)


@asynccontextmanager
async def serving(path: Path, impl: object | None = None) -> AsyncIterator[Server]:
    server = Server()
    server.register_service(SERVICE, impl if impl is not None else EchoService())
    await server.start_unix(path)
    try:
        yield server
    finally:
        await server.close()


async def raw_call(path: Path, request: bytes) -> ResponseReceived:
    """One request through the sans-IO client over a bare socket (no client-side deadline)."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(request)
        conn = ClientConnection()
        conn.start_request("x", "x")  # mirror the stream id used by `request`
        while True:
            conn.receive_data(await reader.read(65536))
            for event in conn.events():
                assert isinstance(event, ResponseReceived)
                return event
    finally:
        writer.close()


async def wait_closed_by_server(reader: asyncio.StreamReader) -> None:
    """Returns at end of stream; a server that keeps the connection open fails the test."""
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 5)


def test_unknown_service_method_and_missing_handler_are_unimplemented(sock: Path) -> None:
    class Partial:
        async def Echo(self, request: pb.EchoRequest, ctx: CallContext) -> pb.EchoResponse:
            return pb.EchoResponse(text=request.text)

    async def main() -> None:
        async with serving(sock, Partial()), await Client.connect_unix(sock) as client:
            for service, method, expected in [
                ("no.Such", "Echo", "unknown service no.Such"),
                (ECHO, "NoSuch", f"unknown method {ECHO}/NoSuch"),
                (ECHO, "Sleep", f"/{ECHO}/Sleep is not implemented"),
            ]:
                with pytest.raises(RPCError) as info:
                    await client.call(service, method, pb.SleepRequest(), pb.SleepResponse)
                assert info.value.code == StatusCode.UNIMPLEMENTED
                assert expected in info.value.status_message
            reply = await client.call(ECHO, "Echo", pb.EchoRequest(text="ok"), pb.EchoResponse)
            assert reply.text == "ok"
    run(main())


def test_handler_errors_map_to_statuses_and_never_kill_the_server(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Fail", pb.FailRequest(code=5, message="no c1"), pb.Empty)
            assert (info.value.code, info.value.status_message) == (5, "no c1")
            assert info.value.evidence["method"] == f"/{ECHO}/Fail"
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Fail", pb.FailRequest(crash=True, message="boom"),
                                  pb.Empty)
            assert info.value.code == StatusCode.UNKNOWN
            assert info.value.status_message == "ValueError: boom"  # one line, no traceback
            reply = await client.call(ECHO, "Echo", pb.EchoRequest(text="alive"),
                                      pb.EchoResponse)
            assert reply.text == "alive"

    caplog.set_level(logging.ERROR, logger="cocoon.ttrpc.server")
    run(main())
    assert any("Fail raised ValueError: boom" in r.getMessage() for r in caplog.records)


def test_server_enforces_timeout_nano_and_cancels_the_handler(sock: Path) -> None:
    impl = EchoService()

    async def main() -> None:
        async with serving(sock, impl):
            _, request = ClientConnection().start_request(
                ECHO, "Sleep", pb.SleepRequest(millis=10_000).SerializeToString(),
                timeout_nano=50_000_000)
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await raw_call(sock, request)
            assert response.status.code == StatusCode.DEADLINE_EXCEEDED
            assert loop.time() - started < 2
            assert impl.cancelled == 1

            _, request = ClientConnection().start_request(
                ECHO, "Sleep", pb.SleepRequest(millis=1).SerializeToString(), timeout_nano=-1)
            response = await raw_call(sock, request)
            assert response.status.code == StatusCode.DEADLINE_EXCEEDED
    run(main())


def test_metadata_and_deadline_reach_the_handler(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            reply = await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse,
                                      timeout=5, metadata={"b": "2", "a": ["1", "0"]})
            assert list(reply.metadata) == ["a=0", "a=1", "b=2"]
            assert 4 < reply.time_remaining <= 5
            reply = await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
            assert reply.time_remaining == 0
    run(main())


def test_streaming_echo_of_more_than_a_mebibyte(sock: Path) -> None:
    chunks = [random.Random(i).randbytes(64 * 1024) for i in range(24)]  # 1.5 MiB
    chunks.append(random.Random(99).randbytes(3 * 1024 * 1024))  # one 3 MiB message

    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            stream = await client.open_stream(ECHO, "EchoStream", pb.EchoResponse,
                                              client_streaming=True, server_streaming=True)
            async with stream:
                async def send() -> None:
                    for chunk in chunks:
                        await stream.send(pb.EchoRequest(payload=chunk))
                    await stream.close_send()

                sender = asyncio.create_task(send())
                received = [reply.payload async for reply in stream]
                await sender
            assert received == chunks
            assert sum(map(len, received)) > 4 * 1024 * 1024

            collect = await client.open_stream(ECHO, "Collect", pb.EchoResponse,
                                               client_streaming=True, server_streaming=False)
            for chunk in chunks[:20]:
                await collect.send(pb.EchoRequest(payload=chunk))
            await collect.close_send()
            total = await collect.recv()
            assert total is not None and total.payload == b"".join(chunks[:20])
            assert await collect.recv() is None
    run(main())


def test_server_streaming_reply(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            stream = await client.open_stream(
                ECHO, "Repeat", pb.EchoResponse, request=pb.RepeatRequest(payload=b"p", count=200),
                client_streaming=False, server_streaming=True)
            replies = [r async for r in stream]
            assert [r.sequence for r in replies] == list(range(200))
            empty = await client.open_stream(
                ECHO, "Repeat", pb.EchoResponse, request=pb.RepeatRequest(count=0),
                client_streaming=False, server_streaming=True)
            assert await empty.recv() is None
    run(main())


def test_call_kind_mismatch_is_invalid_argument(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Repeat", pb.RepeatRequest(count=1), pb.EchoResponse)
            assert info.value.code == StatusCode.INVALID_ARGUMENT
            stream = await client.open_stream(ECHO, "Echo", pb.EchoResponse,
                                              client_streaming=True, server_streaming=False)
            with pytest.raises(RPCError) as info:
                await stream.recv()
            assert info.value.code == StatusCode.INVALID_ARGUMENT
    run(main())


def test_bad_results_become_internal_or_resource_exhausted(sock: Path) -> None:
    class Bad(EchoService):
        async def Echo(self, request: pb.EchoRequest, ctx: CallContext) -> Any:
            if request.text == "wrong type":
                return pb.Empty()
            return pb.EchoResponse(payload=b"\0" * (5 << 20))

    async def main() -> None:
        async with serving(sock, Bad()), await Client.connect_unix(sock) as client:
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Echo", pb.EchoRequest(text="wrong type"),
                                  pb.EchoResponse)
            assert info.value.code == StatusCode.INTERNAL
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
            assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
    run(main())


MALFORMED = {
    "random bytes": random.Random(7).randbytes(4096),
    "oversized length": encode_header(5 << 20, 1, MessageType.REQUEST, 0) + b"\0" * 64,
    "unknown type": encode_frame(Frame(1, 0x09, 0, b"")),
    "even stream id": encode_frame(Frame(2, MessageType.REQUEST, 0, b"")),
    "zero stream id": encode_frame(Frame(0, MessageType.REQUEST, 0, b"")),
    "data on a closed stream": (
        encode_frame(Frame(1, MessageType.REQUEST, Flags.REMOTE_OPEN,
                           ClientConnection().start_request(ECHO, "Collect")[1][10:]))
        + encode_frame(Frame(1, MessageType.DATA, Flags.REMOTE_CLOSED, b""))
        + encode_frame(Frame(1, MessageType.DATA, 0, b"late"))),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_peer_is_disconnected_while_others_are_served(
        sock: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as good:
            slow = asyncio.create_task(
                good.call(ECHO, "Sleep", pb.SleepRequest(millis=300), pb.SleepResponse))
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(MALFORMED[kind])
            await wait_closed_by_server(reader)
            writer.close()
            assert (await slow).slept_millis == 300  # in flight on another connection
            reply = await good.call(ECHO, "Echo", pb.EchoRequest(text="still"), pb.EchoResponse)
            assert reply.text == "still"
            async with await Client.connect_unix(sock) as fresh:
                await fresh.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)

    caplog.set_level(logging.ERROR, logger="cocoon.ttrpc.server")
    run(main())
    assert any(r.getMessage().startswith("closing ttrpc connection") for r in caplog.records)


def test_serve_connection_over_any_stream_pair_returns_the_protocol_error() -> None:
    async def main() -> None:
        server = Server()
        server.register_service(SERVICE, EchoService())
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        served = asyncio.create_task(server.serve_connection(reader, writer, peer="pair"))
        peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
        client = Client(peer_reader, peer_writer, peer="pair")
        reply = await client.call(ECHO, "Echo", pb.EchoRequest(text="hi"), pb.EchoResponse)
        assert reply.text == "hi"
        peer_writer.write(encode_frame(Frame(4, MessageType.REQUEST, 0, b"")))
        error = await served
        assert error is not None and "even stream id 4" in str(error)
        assert error.evidence["stream_id"] == 4
        with pytest.raises(ConnectionLostError):
            await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
        await client.close()
        await server.close()
    run(main())


def test_client_going_away_cancels_its_calls(sock: Path) -> None:
    impl = EchoService()

    async def main() -> None:
        async with serving(sock, impl):
            client = await Client.connect_unix(sock)
            calls = [asyncio.create_task(client.call(ECHO, "Sleep", pb.SleepRequest(millis=9000),
                                                     pb.SleepResponse)) for _ in range(3)]
            await asyncio.sleep(0.2)
            await client.close()
            for call in calls:
                with pytest.raises(ConnectionLostError):
                    await call
            for _ in range(100):
                if impl.cancelled == 3:
                    break
                await asyncio.sleep(0.02)
            assert impl.cancelled == 3
    run(main())


def test_close_answers_in_flight_calls_and_removes_the_socket(sock: Path) -> None:
    impl = EchoService()

    async def main() -> None:
        server = Server()
        server.register_service(SERVICE, impl)
        await server.start_unix(sock)
        client = await Client.connect_unix(sock)
        short = asyncio.create_task(
            client.call(ECHO, "Sleep", pb.SleepRequest(millis=100), pb.SleepResponse))
        long = asyncio.create_task(
            client.call(ECHO, "Sleep", pb.SleepRequest(millis=20_000), pb.SleepResponse))
        await asyncio.sleep(0.05)
        await server.close(grace=0.5)
        assert (await short).slept_millis == 100  # finished within the grace period
        with pytest.raises(RPCError) as info:
            await long
        assert info.value.code == StatusCode.UNAVAILABLE
        assert impl.cancelled == 1
        assert not sock.exists()
        with pytest.raises(ConnectionLostError):
            await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
        await client.close()
        await server.close()  # idempotent
        with pytest.raises(TtrpcError):
            await Client.connect_unix(sock)
    run(main())


def test_handler_not_reading_its_stream_gets_resource_exhausted(
        sock: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "STREAM_FULL_TIMEOUT", 0.2)

    class Deaf(EchoService):
        async def Collect(self, request: None, ctx: CallContext) -> pb.EchoResponse:
            await asyncio.sleep(30)
            return pb.EchoResponse()

    async def main() -> None:
        async with serving(sock, Deaf()), await Client.connect_unix(sock) as client:
            stream = await client.open_stream(ECHO, "Collect", pb.EchoResponse,
                                              client_streaming=True, server_streaming=False)
            with contextlib.suppress(TtrpcError):  # refused once the server gave up
                for _ in range(100):  # more than the server's per-stream buffer
                    await stream.send(pb.EchoRequest(payload=b"x"))
            with pytest.raises(RPCError) as info:
                await stream.recv()
            assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
            await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
    run(main())


def test_start_unix_mode_stale_and_busy_sockets(sock: Path) -> None:
    async def main() -> None:
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(sock))
        stale.close()  # a socket file nobody listens on
        async with serving(sock):
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
            assert [p.name for p in sock.parent.iterdir()] == [sock.name]
            with pytest.raises(TtrpcError, match="another server"):
                await Server().start_unix(sock)
        shared = sock.with_name("shared.sock")
        async with serving(shared) as server:
            await server.start_unix(sock, mode=0o660)
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        assert not sock.exists() and not shared.exists()
        sock.write_text("not a socket")
        with pytest.raises(TtrpcError, match="not a socket"):
            await Server().start_unix(sock)
    run(main())


def test_registration_is_checked() -> None:
    class Sync:
        def Echo(self, request: pb.EchoRequest, ctx: CallContext) -> pb.EchoResponse:
            return pb.EchoResponse()

    server = Server()
    with pytest.raises(TtrpcError, match="must be an async method"):
        server.register_service(SERVICE, Sync())
    server.register_service(SERVICE, EchoService())
    with pytest.raises(TtrpcError, match="registered twice"):
        server.register_service(SERVICE, EchoService())
    info = server.method(ECHO, "EchoStream")
    assert info is not None and info.client_streaming and info.server_streaming
    assert info.request_type.DESCRIPTOR.full_name == "cocoon.testing.EchoRequest"
