"""The host side of the port mirror, against the agent's own port table in this process.

The fake agent answers the mirror's calls with `cocoon.agent.ports.Ports`, whose connections go
to servers on this host's loopback: a guest port M is served by a real server on port E, so the
mirror can listen on 127.0.0.1:M beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import Iterable
from typing import cast

from cocoon.agent.ports import Ports
from cocoon.errors import RPCError
from cocoon.sandbox.agentclient import PORT_CHUNK, AgentClient
from cocoon.sandbox.portmirror import PortMirror
from cocoon.ttrpc.status import StatusCode


class FakeAgent:
    def __init__(self, route: dict[int, int]) -> None:
        self.route = route  # guest port -> the real server's port
        self.table = Ports()
        self.reported: asyncio.Queue[list[int]] = asyncio.Queue()
        self.chunks: list[int] = []

    async def listening_ports(self, known: Iterable[int], wait: float) -> list[int]:
        return await self.reported.get()

    async def port_connect(self, port: int) -> int:
        try:
            return await self.table.connect(self.route[port])
        except Exception as err:
            raise RPCError(StatusCode.UNAVAILABLE, str(err)) from err

    async def port_write(self, connection: int, data: bytes) -> None:
        self.chunks.append(len(data))
        await self.table.write(connection, data)

    async def port_read(self, connection: int, size: int) -> bytes:
        data = await self.table.read(connection, size)
        self.chunks.append(len(data))
        return data

    async def port_close(self, connection: int, *, write_only: bool = False) -> None:
        await self.table.close(connection, write_only)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def digest_server() -> tuple[asyncio.Server, int]:
    """Reads until end of file, answers the sha256 of what it read and the byte count."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h, total = hashlib.sha256(), 0
        while chunk := await reader.read(1 << 16):
            h.update(chunk)
            total += len(chunk)
        writer.write(f"{h.hexdigest()} {total}".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def until(mirror: PortMirror, agent: FakeAgent, ports: list[int]) -> None:
    mirror.changed.clear()
    await agent.reported.put(ports)
    await asyncio.wait_for(mirror.changed.wait(), 5)


def test_a_connection_is_relayed_both_ways_in_bounded_chunks() -> None:
    payload = os.urandom(3 << 20)

    async def scenario() -> bytes:
        server, real = await digest_server()
        guest_port = free_port()
        agent = FakeAgent({guest_port: real})
        mirror = PortMirror(cast(AgentClient, agent), None, "test")
        mirror.start()
        try:
            await until(mirror, agent, [guest_port])
            reader, writer = await asyncio.open_connection("127.0.0.1", guest_port)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            return answer
        finally:
            await mirror.close()
            server.close()
            assert max(agent.chunks) <= PORT_CHUNK
            assert not mirror.connections

    assert asyncio.run(scenario()).decode() == \
        f"{hashlib.sha256(payload).hexdigest()} {len(payload)}"


def test_ports_follow_the_guest_and_a_taken_port_is_skipped() -> None:
    async def scenario() -> None:
        server, real = await digest_server()
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        guest_port = free_port()
        agent = FakeAgent({guest_port: real})
        mirror = PortMirror(cast(AgentClient, agent), None, "test")
        mirror.start()
        try:
            await until(mirror, agent, [guest_port, taken_port])
            assert set(mirror.listeners) == {guest_port}
            assert mirror.unavailable == {taken_port}
            await until(mirror, agent, [])
            assert not mirror.listeners and not mirror.unavailable
            with contextlib.suppress(ConnectionRefusedError), socket.create_connection(
                    ("127.0.0.1", guest_port), timeout=2):
                raise AssertionError("the port still listens after the guest closed it")
        finally:
            await mirror.close()
            taken.close()
            server.close()

    asyncio.run(scenario())


def test_a_port_the_guest_refuses_closes_the_connection() -> None:
    async def scenario() -> bytes:
        guest_port, nowhere = free_port(), free_port()
        agent = FakeAgent({guest_port: nowhere})
        mirror = PortMirror(cast(AgentClient, agent), None, "test")
        mirror.start()
        try:
            await until(mirror, agent, [guest_port])
            reader, writer = await asyncio.open_connection("127.0.0.1", guest_port)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer
        finally:
            await mirror.close()

    assert asyncio.run(scenario()) == b""
