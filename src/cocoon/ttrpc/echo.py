"""The `cocoon.testing.Echo` service: one method of every call kind, for tests and benchmarks.

Lives in the package (not under tests/) so that bench/ttrpc.py, and later a channel self-test
in the agent, can serve it over any transport.
"""

from __future__ import annotations

import asyncio

from cocoon.errors import RPCError
from cocoon.protocols.gen import testing_pb2
from cocoon.ttrpc.server import CallContext

SERVICE = testing_pb2.DESCRIPTOR.services_by_name["Echo"]


class EchoService:
    """Implements every method of `cocoon.testing.Echo`; counts calls and cancellations."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0

    async def Echo(self, request: testing_pb2.EchoRequest,
                   ctx: CallContext) -> testing_pb2.EchoResponse:
        self.calls += 1
        metadata = sorted(f"{k}={v}" for k, values in ctx.metadata.items() for v in values)
        return testing_pb2.EchoResponse(payload=request.payload, text=request.text,
                                        metadata=metadata,
                                        time_remaining=ctx.time_remaining() or 0.0)

    async def EchoStream(self, request: None, ctx: CallContext) -> None:
        self.calls += 1
        sequence = 0
        async for message in ctx:
            assert isinstance(message, testing_pb2.EchoRequest)
            await ctx.send(testing_pb2.EchoResponse(payload=message.payload, text=message.text,
                                                    sequence=sequence))
            sequence += 1

    async def Collect(self, request: None, ctx: CallContext) -> testing_pb2.EchoResponse:
        self.calls += 1
        parts: list[bytes] = []
        async for message in ctx:
            assert isinstance(message, testing_pb2.EchoRequest)
            parts.append(message.payload)
        return testing_pb2.EchoResponse(payload=b"".join(parts), sequence=len(parts))

    async def Discard(self, request: None, ctx: CallContext) -> testing_pb2.DiscardResponse:
        self.calls += 1
        messages = size = 0
        async for message in ctx:
            assert isinstance(message, testing_pb2.EchoRequest)
            messages += 1
            size += len(message.payload)
        return testing_pb2.DiscardResponse(messages=messages, bytes=size)

    async def Repeat(self, request: testing_pb2.RepeatRequest, ctx: CallContext) -> None:
        self.calls += 1
        for sequence in range(request.count):
            await ctx.send(testing_pb2.EchoResponse(payload=request.payload, sequence=sequence))

    async def Sleep(self, request: testing_pb2.SleepRequest,
                    ctx: CallContext) -> testing_pb2.SleepResponse:
        self.calls += 1
        try:
            await asyncio.sleep(request.millis / 1000)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return testing_pb2.SleepResponse(slept_millis=request.millis)

    async def Fail(self, request: testing_pb2.FailRequest,
                   ctx: CallContext) -> testing_pb2.Empty:
        self.calls += 1
        if request.crash:
            raise ValueError(f"{request.message}\nsecond line that must not reach the client")
        raise RPCError(request.code, request.message)
