"""The host end of a stdio port against a guest that says what it likes.

A unix socket server plays QEMU's chardev (the port's bytes), and a stand-in for the agent
client answers BindStream and StreamEnd (the VM tests in tests/vm/test_stdio_ports.py run the
real thing; here the guest's answers are chosen to be wrong).
"""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path
from typing import Any, cast

import pytest

from cocoon.errors import RPCError
from cocoon.sandbox import stdioport
from cocoon.sandbox.agentclient import AgentClient, StreamPort
from cocoon.sandbox.relay import write_all
from cocoon.ttrpc.status import StatusCode

TOKEN = b"k" * 16


class Agent:
    """BindStream and StreamEnd as the test wants them answered."""

    def __init__(self, bound: StreamPort | RPCError | None, total: int) -> None:
        self.bound = bound
        self.total = total
        self.end_asked = asyncio.Event()
        self.release = asyncio.Event()

    async def bind_stream(self, *args: Any, **kwargs: Any) -> StreamPort | None:
        if isinstance(self.bound, RPCError):
            raise self.bound
        return self.bound

    async def stream_end(self, *args: Any, **kwargs: Any) -> int:
        self.end_asked.set()
        await self.release.wait()
        return self.total


async def relay(tmp_path: Path, agent: Agent, send: bytes, *,
                close_after: bool = False) -> tuple[bool, bytes, bytes]:
    """Serve `send` on port 0's socket once the token arrived; relay it into a pipe."""
    token = bytearray()

    async def qemu(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        token.extend(await reader.readexactly(len(TOKEN)))
        writer.write(send)
        await writer.drain()
        agent.release.set()  # the end is announced once everything was sent
        if close_after:
            writer.close()
            return
        await asyncio.sleep(30)

    socket_path = tmp_path / "io0.sock"
    server = await asyncio.start_unix_server(qemu, str(socket_path))
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    received = asyncio.ensure_future(asyncio.to_thread(_read_all, read_fd))
    stream = stdioport.PortStream(cast(AgentClient, agent), "c", "e", False,
                                  lambda k: tmp_path / f"io{k}.sock")
    try:
        bound = await stream.bind()
        if bound:
            await stream.run(write_fd, write_all)
    finally:
        os.close(write_fd)
        server.close()
        got = await received
    return bound, got, bytes(token)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


def test_the_announced_bytes_arrive_then_the_copy_stops(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    bound, got, token = asyncio.run(relay(tmp_path, Agent(StreamPort(0, TOKEN), len(data)),
                                          data))
    assert bound and token == TOKEN
    assert got == data


def test_a_guest_that_stops_short_is_given_up_on(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdioport, "IDLE_TIMEOUT", 0.3)
    with pytest.raises(TimeoutError, match="10 of the 1000000000000"):
        asyncio.run(relay(tmp_path, Agent(StreamPort(0, TOKEN), 10**12), b"x" * 10))


def test_more_than_announced_is_relayed_not_believed(tmp_path: Path) -> None:
    bound, got, _ = asyncio.run(relay(tmp_path, Agent(StreamPort(0, TOKEN), 4), b"abcdefgh"))
    assert bound and got.startswith(b"abcd")  # it stops at (or soon after) what was announced


def test_a_vm_that_closes_the_port_ends_the_copy(tmp_path: Path) -> None:
    bound, got, _ = asyncio.run(relay(tmp_path, Agent(StreamPort(0, TOKEN), 100), b"abc",
                                      close_after=True))
    assert bound and got == b"abc"


@pytest.mark.parametrize("answer", [None, RPCError(StatusCode.UNIMPLEMENTED, "no such method")])
def test_no_port_or_an_old_agent_leaves_the_stream_on_read_stdout(
        tmp_path: Path, answer: StreamPort | RPCError | None) -> None:
    bound, _, token = asyncio.run(relay(tmp_path, Agent(answer, 0), b""))
    assert not bound and token == b""


def test_other_agent_errors_are_not_hidden(tmp_path: Path) -> None:
    with pytest.raises(RPCError):
        asyncio.run(relay(tmp_path, Agent(RPCError(StatusCode.INTERNAL, "boom"), 0), b""))


def test_a_relay_cancelled_mid_read_leaves_no_read_behind(tmp_path: Path) -> None:
    """The caller's relay stops (its monitor died) while the port waits for bytes: the read
    ends with the copy, so nothing fails later on the closed socket with "Task exception was
    never retrieved" (a traceback `cocoon exec` printed when the monitor was killed)."""
    unretrieved: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(
            f"{context['message']} {context.get('exception')!r}"))
        agent = Agent(StreamPort(0, TOKEN), 10)
        socket_path = tmp_path / "io0.sock"

        hold = asyncio.Event()

        async def silent_qemu(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(len(TOKEN))
            await hold.wait()
            writer.close()

        server = await asyncio.start_unix_server(silent_qemu, str(socket_path))
        stream = stdioport.PortStream(cast(AgentClient, agent), "c", "e", False,
                                      lambda k: tmp_path / f"io{k}.sock")
        assert await stream.bind()
        copy = asyncio.ensure_future(stream.run(None, write_all))
        await agent.end_asked.wait()
        await asyncio.sleep(0.2)  # the read is pending now
        copy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await copy
        # the read on the port's socket ended with it (left pending, it would run its
        # callback on a closed descriptor if the socket became readable in the same turn)
        reads = [task for task in asyncio.all_tasks()
                 if "sock_recv" in task.get_coro().__qualname__]  # type: ignore[union-attr]
        assert reads == []
        for _ in range(5):
            await asyncio.sleep(0.05)
        gc.collect()  # a task dropped with its exception says so when it is collected
        hold.set()
        await asyncio.sleep(0.05)
        server.close()

    asyncio.run(scenario())
    assert unretrieved == []
