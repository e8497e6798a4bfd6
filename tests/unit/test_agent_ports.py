"""The guest's side of the port mirror: /proc/net/tcp parsing and connections to loopback."""

from __future__ import annotations

import asyncio

import pytest

from cocoon.agent import ports
from cocoon.agent.container import ContainerError
from cocoon.ttrpc.status import StatusCode

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0F02000A:0016 0202000A:C350 01 00000000:00000000 02:000A7B5F 00000000     0        0 3 4
   3: 00000000:0000 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: garbage
   5: 0100007F:ZZZZ 00000000:0000 0A
   6: 0100007F:1F90 00000000:0000 QQ 00000000:00000000
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000
"""


def test_only_listening_sockets_with_a_valid_port_count() -> None:
    assert ports.listening_ports(TCP) == {8080, 22}
    assert ports.listening_ports(TCP6) == {80}
    assert ports.listening_ports("") == set()


def test_watch_answers_at_once_when_the_set_differs_and_waits_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    found = [[8080]]
    monkeypatch.setattr(ports, "read_listening_ports", lambda: found[0])
    monkeypatch.setattr(ports, "POLL_INTERVAL", 0.01)
    table = ports.Ports()

    async def scenario() -> tuple[list[int], list[int], float]:
        changed = await table.watch(set(), 10.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        same = await table.watch({8080}, 0.1)
        waited = loop.time() - start
        return changed, same, waited

    changed, same, waited = asyncio.run(scenario())
    assert changed == [8080] and same == [8080] and waited >= 0.09


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the other side shuts its sending side
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_connection_carries_bytes_both_ways_and_half_closes() -> None:
    async def scenario() -> bytes:
        server, port = await _echo_server()
        table = ports.Ports()
        number = await table.connect(port)
        assert await table.write(number, b"hello ") == 6
        await table.write(number, b"guest")
        await table.close(number, write_only=True)
        got = b""
        while chunk := await table.read(number, 4):
            assert len(chunk) <= 4
            got += chunk
        await table.close(number, write_only=False)
        assert number not in table.connections
        server.close()
        return got

    assert asyncio.run(scenario()) == b"HELLO GUEST"


def test_errors_are_statuses() -> None:
    async def scenario() -> None:
        server, port = await _echo_server()
        server.close()
        await server.wait_closed()
        table = ports.Ports()
        with pytest.raises(ContainerError) as refused:
            await table.connect(port)
        assert refused.value.code == StatusCode.UNAVAILABLE
        with pytest.raises(ContainerError) as unknown:
            await table.read(42, 10)
        assert unknown.value.code == StatusCode.NOT_FOUND
        with pytest.raises(ContainerError) as bad:
            await table.connect(70000)
        assert bad.value.code == StatusCode.INVALID_ARGUMENT
        await table.close(42, write_only=False)  # closing twice or unknown is quiet

    asyncio.run(scenario())


def test_the_number_of_connections_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "MAX_CONNECTIONS", 2)

    async def scenario() -> None:
        server, port = await _echo_server()
        table = ports.Ports()
        await table.connect(port)
        await table.connect(port)
        with pytest.raises(ContainerError) as full:
            await table.connect(port)
        assert full.value.code == StatusCode.RESOURCE_EXHAUSTED
        table.close_all()
        server.close()

    asyncio.run(scenario())
