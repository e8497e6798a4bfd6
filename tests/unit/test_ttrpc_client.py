"""The asyncio client: multiplexing, deadlines, cancellation, lost connections and the Stub."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConnectionLostError, ProtocolError, RPCError, TtrpcError
from cocoon.protocols.gen import testing_pb2 as pb
from cocoon.ttrpc import client as client_module
from cocoon.ttrpc.client import Client, Stub, metadata_pairs
from cocoon.ttrpc.echo import SERVICE, EchoService
from cocoon.ttrpc.frame import MessageType, encode_header
from cocoon.ttrpc.server import CallContext, Server
from cocoon.ttrpc.status import StatusCode

ECHO = "cocoon.testing.Echo"

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


def run(coro: Coroutine[Any, Any, None], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def sock() -> Iterator[Path]:
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


@asynccontextmanager
async def raw_server(path: Path, handler: RawHandler) -> AsyncIterator[None]:
    """A misbehaving server, scripted by `handler`."""
    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    listener = await asyncio.start_unix_server(scripted, path=str(path))
    try:
        yield
    finally:
        listener.close()
        await listener.wait_closed()


class ShuffledEcho(EchoService):
    """Answers after a random delay, so that replies come back out of order."""

    async def Echo(self, request: pb.EchoRequest, ctx: CallContext) -> pb.EchoResponse:
        await asyncio.sleep(random.random() * 0.05)
        return await super().Echo(request, ctx)


def test_hundred_concurrent_calls_each_answered_to_its_caller(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock, ShuffledEcho()), await Client.connect_unix(sock) as client:
            order: list[int] = []

            async def one(i: int) -> None:
                reply = await client.call(ECHO, "Echo",
                                          pb.EchoRequest(text=str(i), payload=bytes([i]) * i),
                                          pb.EchoResponse)
                assert (reply.text, reply.payload) == (str(i), bytes([i]) * i)
                order.append(i)

            await asyncio.gather(*(one(i) for i in range(100)))
            assert sorted(order) == list(range(100))
            assert order != list(range(100))  # they really overlapped
            assert client.pending == 0
    run(main())


def test_client_deadline_without_server_help(sock: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async def main() -> None:
        async with raw_server(sock, silent), await Client.connect_unix(sock) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse, timeout=0.2)
            assert info.value.code == StatusCode.DEADLINE_EXCEEDED
            assert 0.2 <= loop.time() - started < 2
            assert client.pending == 0
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse, timeout=0)
            assert info.value.code == StatusCode.DEADLINE_EXCEEDED
    run(main())


def test_deadline_on_a_real_server(sock: Path) -> None:
    impl = EchoService()

    async def main() -> None:
        async with serving(sock, impl), await Client.connect_unix(sock) as client:
            stub = Stub(client, SERVICE)
            with pytest.raises(RPCError) as info:
                await stub.Sleep(pb.SleepRequest(millis=5000), timeout=0.1)
            assert info.value.code == StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(0.2)
            assert impl.cancelled == 1  # the server enforced the same deadline
            assert (await stub.Sleep(pb.SleepRequest(millis=1), timeout=5)).slept_millis == 1
    run(main())


def test_cancelled_call_cleans_up_its_stream(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            call = asyncio.create_task(
                client.call(ECHO, "Sleep", pb.SleepRequest(millis=300), pb.SleepResponse))
            await asyncio.sleep(0.05)
            assert client.pending == 1
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert client.pending == 0
            await asyncio.sleep(0.4)  # the server's late answer is dropped quietly
            reply = await client.call(ECHO, "Echo", pb.EchoRequest(text="ok"), pb.EchoResponse)
            assert reply.text == "ok" and not client.closed
    run(main())


def test_abandoned_stream_does_not_disturb_the_connection(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            stream = await client.open_stream(
                ECHO, "Repeat", pb.EchoResponse, request=pb.RepeatRequest(count=10_000),
                client_streaming=False, server_streaming=True)
            async with stream:
                first = await stream.recv()
                assert first is not None and first.sequence == 0
            assert stream.finished and client.pending == 0
            bidi = await client.open_stream(ECHO, "EchoStream", pb.EchoResponse,
                                            client_streaming=True, server_streaming=True)
            async with bidi:
                await bidi.send(pb.EchoRequest(text="a"))
                reply = await bidi.recv()
                assert reply is not None and reply.text == "a"
            with pytest.raises(TtrpcError):
                await bidi.send(pb.EchoRequest())
            for _ in range(3):
                await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
    run(main())


def test_lost_connection_fails_every_pending_call(sock: Path) -> None:
    seen = asyncio.Event()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        seen.set()
        await asyncio.sleep(0.1)

    async def main() -> None:
        async with raw_server(sock, hang_up):
            client = await Client.connect_unix(sock)
            calls = [asyncio.create_task(client.call(ECHO, "Echo", pb.EchoRequest(),
                                                     pb.EchoResponse)) for _ in range(5)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert seen.is_set()
            for result in results:
                assert isinstance(result, ConnectionLostError)
                assert str(sock) in str(result) and result.evidence["peer"] == str(sock)
            assert client.closed and client.pending == 0
            with pytest.raises(ConnectionLostError, match="server closed"):
                await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
            await client.close()
    run(main())


def test_server_breaking_the_protocol_fails_calls_with_the_cause(sock: Path) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(encode_header(1 << 30, 1, MessageType.RESPONSE, 0))
        await reader.read()

    async def main() -> None:
        async with raw_server(sock, garbage), await Client.connect_unix(sock) as client:
            with pytest.raises(ConnectionLostError, match="protocol error") as info:
                await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)
            assert isinstance(info.value.__cause__, ProtocolError)
    run(main())


def test_close_is_clean_and_idempotent(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock):
            client = await Client.connect_unix(sock)
            pending = asyncio.create_task(
                client.call(ECHO, "Sleep", pb.SleepRequest(millis=5000), pb.SleepResponse))
            await asyncio.sleep(0.05)
            await client.close()
            await client.close()
            with pytest.raises(ConnectionLostError, match="client closed"):
                await pending
            assert client.closed
    run(main())


def test_connect_failure_names_the_path(sock: Path) -> None:
    async def main() -> None:
        with pytest.raises(TtrpcError, match=str(sock)):
            await Client.connect_unix(sock)
    run(main())


def test_stub_and_streaming_api(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            stub = Stub(client, SERVICE)
            reply = await stub.Echo(pb.EchoRequest(text="t"), metadata=[("k", "v")])
            assert reply.text == "t" and list(reply.metadata) == ["k=v"]
            with pytest.raises(TypeError):
                await stub.Echo(pb.SleepRequest())
            with pytest.raises(AttributeError):
                _ = stub.NoSuchMethod
            repeat = await stub.Repeat(pb.RepeatRequest(payload=b"r", count=3))
            assert [m.payload async for m in repeat] == [b"r"] * 3
            collect = await stub.Collect()
            await collect.send(pb.EchoRequest(payload=b"a"))
            await collect.send(pb.EchoRequest(payload=b""))  # an empty message still counts
            await collect.close_send()
            total = await collect.recv()
            assert total is not None and (total.payload, total.sequence) == (b"a", 2)
            with pytest.raises(TypeError):
                await client.open_stream(ECHO, "Collect", pb.EchoResponse,
                                         request=pb.EchoRequest(), client_streaming=True,
                                         server_streaming=False)
            with pytest.raises(RPCError) as info:
                await client.call(ECHO, "Echo", pb.EchoRequest(payload=b"\0" * (5 << 20)),
                                  pb.EchoResponse)
            assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
    run(main())


def test_caller_not_reading_a_stream_loses_only_that_stream(
        sock: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "STREAM_FULL_TIMEOUT", 0.2)

    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            flood = await client.open_stream(
                ECHO, "Repeat", pb.EchoResponse, request=pb.RepeatRequest(count=1000),
                client_streaming=False, server_streaming=True)
            await asyncio.sleep(0.5)  # not reading
            reply = await client.call(ECHO, "Echo", pb.EchoRequest(text="x"), pb.EchoResponse)
            assert reply.text == "x"
            with pytest.raises(RPCError) as info:
                async for _ in flood:
                    pass
            assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
    run(main())


def test_abandoning_an_unread_stream_frees_the_connection_at_once(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock), await Client.connect_unix(sock) as client:
            flood = await client.open_stream(
                ECHO, "Repeat", pb.EchoResponse, request=pb.RepeatRequest(count=1000),
                client_streaming=False, server_streaming=True)
            await asyncio.sleep(0.2)  # the read loop now waits for room in flood's inbox
            await flood.aclose()
            reply = await asyncio.wait_for(
                client.call(ECHO, "Echo", pb.EchoRequest(text="x"), pb.EchoResponse), 1.0)
            assert reply.text == "x"
    run(main())


def test_metadata_pairs() -> None:
    assert metadata_pairs(None) == ()
    assert metadata_pairs({"a": "1", "b": ["2", "3"]}) == (("a", "1"), ("b", "2"), ("b", "3"))
    assert metadata_pairs([("x", "y")]) == (("x", "y"),)
