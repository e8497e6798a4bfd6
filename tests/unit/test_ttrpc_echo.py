"""The cocoon.testing.Echo implementation, served over a socketpair with `serve_connection`."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cocoon.errors import RPCError
from cocoon.protocols.gen import testing_pb2 as pb
from cocoon.ttrpc.client import Client, Stub
from cocoon.ttrpc.echo import SERVICE, EchoService
from cocoon.ttrpc.server import Server
from cocoon.ttrpc.status import StatusCode


def test_every_method_of_the_echo_service() -> None:
    impl = EchoService()

    async def main() -> None:
        server = Server()
        server.register_service(SERVICE, impl)
        ours, theirs = socket.socketpair()
        served = asyncio.create_task(
            server.serve_connection(*await asyncio.open_connection(sock=ours), peer="pair"))
        client = Client(*await asyncio.open_connection(sock=theirs), peer="pair")
        stub = Stub(client, SERVICE)

        assert (await stub.Echo(pb.EchoRequest(text="e", payload=b"p"))).payload == b"p"

        bidi = await stub.EchoStream()
        for text in "abc":
            await bidi.send(pb.EchoRequest(text=text))
        await bidi.close_send()
        assert [(m.text, m.sequence) async for m in bidi] == [("a", 0), ("b", 1), ("c", 2)]

        collect = await stub.Collect()
        await collect.close_send()
        empty = await collect.recv()
        assert empty is not None and (empty.payload, empty.sequence) == (b"", 0)

        discard = await stub.Discard()
        for size in (3, 0, 5):
            await discard.send(pb.EchoRequest(payload=b"d" * size))
        await discard.close_send()
        counted = await discard.recv()
        assert counted is not None and (counted.messages, counted.bytes) == (3, 8)

        repeat = await stub.Repeat(pb.RepeatRequest(payload=b"r", count=2))
        assert [m.sequence async for m in repeat] == [0, 1]

        assert (await stub.Sleep(pb.SleepRequest(millis=5))).slept_millis == 5
        with pytest.raises(RPCError) as info:
            await stub.Fail(pb.FailRequest(code=StatusCode.ABORTED, message="m"))
        assert (info.value.code, info.value.status_message) == (StatusCode.ABORTED, "m")

        assert impl.calls == 7 and impl.cancelled == 0
        await client.close()
        assert await served is None  # a clean disconnect is no protocol error
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))
