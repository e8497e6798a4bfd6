"""The stdio relay against an in-process agent: output is pulled until the end of each stream,
stdin is pushed in order and then closed, signals and the exit status go through the typed
client, and what the guest reports is checked before use.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from cocoon.errors import RPCError
from cocoon.protocols.gen import agent_pb2
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.ttrpc.status import StatusCode
from tests.framework.fakeagent import FakeAgent, connected


def chunks(*parts: bytes) -> Callable[[Message], Awaitable[Message]]:
    """A ReadStdout/ReadStderr handler that answers `parts`, then the end of the stream."""
    queue: Iterator[bytes] = iter(parts)

    async def read(request: Message) -> Message:
        return agent_pb2.ReadStreamResponse(data=next(queue, b""))
    return read


def read_all(fd: int) -> bytes:
    data = bytearray()
    while block := os.read(fd, 65536):
        data += block
    os.close(fd)
    return bytes(data)


def relay_once(agent: FakeAgent, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run a relay of c1/e1 with pipes for stdio; its status and what reached stdout, stderr."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r = None
    writer = None
    if stdin is not None:
        in_r, in_w = os.pipe()

        def feed() -> None:
            os.write(in_w, stdin)  # more than a pipe holds: written while the relay reads
            os.close(in_w)

        writer = threading.Thread(target=feed)
        writer.start()

    async def scenario() -> int:
        async with connected(agent) as (client, _):
            relay = ProcessRelay(client, "c1", "e1", Stdio(stdin=in_r, stdout=out_w,
                                                           stderr=err_w))
            return await asyncio.wait_for(relay.run(forward_signals=False), 30)

    try:
        status = asyncio.run(scenario())
    finally:
        if writer is not None:
            writer.join(timeout=30)
        for fd in (out_w, err_w, in_r):
            if fd is not None:
                os.close(fd)
    return status, read_all(out_r), read_all(err_r)


def test_output_is_relayed_to_the_end_and_the_exit_status_returned() -> None:
    agent = FakeAgent(replies={"WaitProcess": agent_pb2.WaitProcessResponse(status=3)},
                      handlers={"ReadStdout": chunks(b"hello ", b"world"),
                                "ReadStderr": chunks(b"oops")})
    assert relay_once(agent) == (3, b"hello world", b"oops")
    reads = [r for _, m, r in agent.calls if m == "ReadStdout"]
    assert len(reads) == 3
    assert reads[0] == agent_pb2.ReadStreamRequest(container_id="c1", exec_id="e1", len=1 << 20)


def test_stdin_arrives_in_order_before_it_is_closed() -> None:
    closed = asyncio.Event()

    async def close(request: Message) -> Message:
        closed.set()
        return empty_pb2.Empty()

    async def wait(request: Message) -> Message:
        await closed.wait()
        return agent_pb2.WaitProcessResponse(status=0)

    data = bytes(range(256)) * 4096  # 1 MiB: several chunks, some in flight at once
    agent = FakeAgent(handlers={"CloseStdin": close, "WaitProcess": wait})
    assert relay_once(agent, stdin=data)[0] == 0
    methods = [m for m in agent.methods() if m in ("WriteStdin", "CloseStdin")]
    assert methods[-1] == "CloseStdin" and methods.count("CloseStdin") == 1
    written = [r for _, m, r in agent.calls if m == "WriteStdin"]
    assert isinstance(written[0], agent_pb2.WriteStreamRequest)
    assert (written[0].container_id, written[0].exec_id) == ("c1", "e1")
    assert b"".join(r.data for r in written if isinstance(r, agent_pb2.WriteStreamRequest)) \
        == data


def test_a_status_out_of_range_is_255_and_a_vanished_stream_ends_quietly() -> None:
    agent = FakeAgent(replies={"WaitProcess": agent_pb2.WaitProcessResponse(status=-7)},
                      errors={"ReadStdout": RPCError(StatusCode.NOT_FOUND, "no process e1"),
                              "ReadStderr": RPCError(StatusCode.NOT_FOUND, "no process e1")})
    assert relay_once(agent) == (255, b"", b"")


def test_signals_go_to_the_process_and_a_refusal_is_not_raised() -> None:
    agent = FakeAgent(errors={"SignalProcess": RPCError(StatusCode.NOT_FOUND, "gone")})

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            relay = ProcessRelay(client, "c1", "e1", Stdio(stdin=None, stdout=None, stderr=None))
            await relay.send_signal(signal.SIGTERM)

    asyncio.run(scenario())
    assert agent.calls == [("grpc.AgentService", "SignalProcess", agent_pb2.SignalProcessRequest(
        container_id="c1", exec_id="e1", signal=signal.SIGTERM))]
