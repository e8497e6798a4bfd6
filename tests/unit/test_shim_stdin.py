"""The stdin pump against a real ttrpc agent stand-in: everything written arrives before the end
of file, also when CloseIO comes while data is still on its way; a writer that never closes is
cut off after the grace period.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from google.protobuf import empty_pb2

from cocoon.protocols.gen import agent_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.shim.stdin import StdinPump
from cocoon.ttrpc.server import CallContext, Server

AGENT = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]


class SlowAgent:
    """Takes its time over every write, as a guest over virtio-serial does."""

    def __init__(self) -> None:
        self.log: list[bytes | str] = []

    async def WriteStdin(self, request: agent_pb2.WriteStreamRequest,
                         ctx: CallContext) -> agent_pb2.WriteStreamResponse:
        await asyncio.sleep(0.02)
        self.log.append(request.data)
        return agent_pb2.WriteStreamResponse(len=len(request.data))

    async def CloseStdin(self, request: agent_pb2.CloseStdinRequest,
                         ctx: CallContext) -> empty_pb2.Empty:
        self.log.append("closed")
        return empty_pb2.Empty()


async def _setup(tmp_path: Path) -> tuple[SlowAgent, Server, AgentClient, int, int]:
    agent = SlowAgent()
    server = Server()
    server.register_service(AGENT, agent)
    await server.start_unix(tmp_path / "agent.sock")
    client = await AgentClient.connect(tmp_path / "agent.sock")
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    return agent, server, client, reader, writer


def test_close_io_after_the_writer_closed_delivers_everything_first(tmp_path: Path) -> None:
    async def scenario() -> SlowAgent:
        agent, server, client, reader, writer = await _setup(tmp_path)
        pump = StdinPump(client, "c1", "", reader)
        pump.start()
        data = bytes(range(256)) * 1024  # 256 KiB: many slow writes
        await asyncio.to_thread(os.write, writer, data)
        os.close(writer)  # the client is done ...
        await asyncio.sleep(0)
        await pump.close(grace=10.0)  # ... and says so before everything arrived
        await client.close()
        await server.close()
        os.close(reader)
        return agent

    agent = asyncio.run(scenario())
    assert agent.log[-1] == "closed" and agent.log.count("closed") == 1
    assert b"".join(d for d in agent.log if isinstance(d, bytes)) == \
        bytes(range(256)) * 1024


def test_a_writer_that_stays_open_is_cut_off(tmp_path: Path) -> None:
    async def scenario() -> tuple[SlowAgent, float]:
        agent, server, client, reader, writer = await _setup(tmp_path)
        pump = StdinPump(client, "c1", "e1", reader)
        pump.start()
        os.write(writer, b"partial")
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await pump.close(grace=0.3)
        took = loop.time() - started
        await pump.close()  # once is enough
        os.close(writer)
        await client.close()
        await server.close()
        os.close(reader)
        return agent, took

    agent, took = asyncio.run(scenario())
    assert agent.log == [b"partial", "closed"]
    assert 0.25 <= took < 2.0
