"""The host half of stdin through a stdio port (cocoon.sandbox.stdinport), against the fake
agent and a unix socket playing QEMU's end of the port: the token first and nothing else until
the go-ahead, the end of file as a shutdown with the socket held until the port's end closes,
and WriteStdin whenever no port is bound. The guest half is in tests/vm/test_stdin_port.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from cocoon.errors import RPCError
from cocoon.protocols.gen import agent_pb2, guest_pb2
from cocoon.sandbox.stdinport import GO_AHEAD, deliver_stdin
from cocoon.ttrpc.status import StatusCode
from tests.framework.fakeagent import FakeAgent, connected

TOKEN = b"k" * 16


async def _chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


class PortEnd:
    """QEMU's socket for port 0: reads the token, checks nothing came with it, says go (or
    not), then reads to end of file and closes, recording what arrived."""

    def __init__(self, path: Path, go: bool = True) -> None:
        self.go = go
        self.token = b""
        self.before_go = b""
        self.data = bytearray()
        self.closed = asyncio.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listener.setblocking(False)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.listener)
        with conn:
            while len(self.token) < len(TOKEN):
                self.token += await loop.sock_recv(conn, len(TOKEN) - len(self.token))
            await asyncio.sleep(0.1)  # anything sent before the go-ahead would be here by now
            try:
                self.before_go = conn.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.before_go = b""
            if self.go:
                await loop.sock_sendall(conn, GO_AHEAD)
                while chunk := await loop.sock_recv(conn, 1 << 20):
                    self.data += chunk
            else:
                while await loop.sock_recv(conn, 1 << 16):  # until the host gives up
                    pass
        self.closed.set()

    async def stop(self) -> None:
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        self.listener.close()


def _bound() -> guest_pb2.BindStreamResponse:
    return guest_pb2.BindStreamResponse(bound=True, port=0, token=TOKEN)


def test_bound_stdin_goes_through_the_port_and_ends_with_a_shutdown(tmp_path: Path) -> None:
    agent = FakeAgent(replies={"BindStdin": _bound()}, delays={"StreamEnd": 30})
    end = PortEnd(tmp_path / "io0.sock")
    told: list[int] = []

    async def scenario() -> None:
        await end.start()
        async with connected(agent) as (client, _):
            await deliver_stdin(client, "c1", "e1", _chunks(b"a" * 300_000, b"b" * 5),
                                lambda k: tmp_path / f"io{k}.sock", told.append)
        assert end.closed.is_set(), "the host closed before the port's end did"
        await end.stop()

    asyncio.run(scenario())
    assert end.token == TOKEN and end.before_go == b""
    assert bytes(end.data) == b"a" * 300_000 + b"b" * 5
    assert told == [0]
    assert agent.methods() == ["BindStdin", "StreamEnd"]  # no WriteStdin, no CloseStdin
    bind = agent.calls[0][2]
    assert isinstance(bind, guest_pb2.BindStdinRequest) and bind.exec_id == "e1"
    stream_end = agent.calls[1][2]
    assert isinstance(stream_end, guest_pb2.StreamEndRequest) and stream_end.stdin


def test_a_copy_that_ended_in_the_guest_stops_the_host(tmp_path: Path) -> None:
    """No go-ahead comes and StreamEnd answers (the process's stdin is gone): the host stops,
    having sent its token only."""
    agent = FakeAgent(replies={"BindStdin": _bound()}, delays={"StreamEnd": 0.3})
    end = PortEnd(tmp_path / "io0.sock", go=False)

    async def scenario() -> None:
        await end.start()
        async with connected(agent) as (client, _):
            async with asyncio.timeout(10):
                await deliver_stdin(client, "c1", "", _chunks(b"x" * 1000),
                                    lambda k: tmp_path / f"io{k}.sock")
            await asyncio.wait_for(end.closed.wait(), 10)
        await end.stop()

    asyncio.run(scenario())
    assert end.token == TOKEN and end.before_go == b"" and not end.data
    assert "WriteStdin" not in agent.methods()


def test_without_a_port_stdin_goes_through_writestdin(tmp_path: Path) -> None:
    for reply in (guest_pb2.BindStreamResponse(), RPCError(StatusCode.UNIMPLEMENTED, "old")):
        agent = FakeAgent(replies={"WriteStdin": agent_pb2.WriteStreamResponse(len=3)})
        if isinstance(reply, RPCError):
            agent.errors["BindStdin"] = reply
        else:
            agent.replies["BindStdin"] = reply

        async def scenario(agent: FakeAgent = agent) -> None:
            async with connected(agent) as (client, _):
                await deliver_stdin(client, "c1", "", _chunks(b"abc", b"def"),
                                    lambda k: tmp_path / "none.sock")

        asyncio.run(scenario())
        assert agent.methods() == ["BindStdin", "WriteStdin", "WriteStdin", "CloseStdin"]
        written = [m.data for _, _, m in agent.calls
                   if isinstance(m, agent_pb2.WriteStreamRequest)]
        assert written == [b"abc", b"def"]


def test_an_empty_stdin_takes_no_port(tmp_path: Path) -> None:
    agent = FakeAgent()

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            await deliver_stdin(client, "c1", "", _chunks(), lambda k: tmp_path / "x.sock")

    asyncio.run(scenario())
    assert agent.methods() == ["CloseStdin"]
