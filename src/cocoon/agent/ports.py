"""The guest's side of the port mirror: which TCP ports listen, and connections to them.

The host listens where an engine expects a container's ports (the pod's network namespace on
the host, or the host's loopback for a sandbox on the host network) and carries each connection
it accepts over the agent channel to the guest's loopback, through `cocoon.GuestAgent`'s
ListeningPorts, PortConnect, PortWrite, PortRead and PortClose. The containers share the
guest's network namespace, so the agent's own /proc/net/tcp and tcp6 are theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket

from cocoon.agent.container import ContainerError
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.agent.ports")

PROC_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_LISTEN = 0x0A
MAX_PORTS = 1024          # reported at most (the host mirrors fewer)
MAX_CONNECTIONS = 256     # open at once
MAX_CHUNK = 256 << 10     # bytes per PortRead
POLL_INTERVAL = 0.25      # seconds between two looks at the tables during ListeningPorts
MAX_WAIT = 60.0           # the longest a ListeningPorts call waits for a change
CONNECT_TIMEOUT = 5.0


def listening_ports(table: str) -> set[int]:
    """The local ports of the sockets in LISTEN state in a /proc/net/tcp{,6} table's text.

    Each line after the header: `sl local_address rem_address st ...`, addresses as
    `HEXADDR:HEXPORT`, the state in hex. Lines that do not parse are skipped."""
    ports: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            state = int(fields[3], 16)
            _, port_hex = fields[1].rsplit(":", 1)
            port = int(port_hex, 16)
        except ValueError:
            continue
        if state == TCP_LISTEN and 0 < port < 65536:
            ports.add(port)
    return ports


def read_listening_ports() -> list[int]:
    ports: set[int] = set()
    for path in PROC_TABLES:
        with contextlib.suppress(OSError), open(path) as f:
            ports |= listening_ports(f.read())
    return sorted(ports)[:MAX_PORTS]


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()  # one write at a time, in order


class Ports:
    """The connections the host opened, by number."""

    def __init__(self) -> None:
        self.connections: dict[int, Connection] = {}
        self._numbers = itertools.count(1)

    async def watch(self, known: set[int], wait: float) -> list[int]:
        """The listening ports, once they differ from `known` or after `wait` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait, 0.0), MAX_WAIT)
        while True:
            ports = read_listening_ports()
            if set(ports) != known or loop.time() >= deadline:
                return ports
            await asyncio.sleep(min(POLL_INTERVAL, max(deadline - loop.time(), 0.0)))

    async def connect(self, port: int) -> int:
        if not 0 < port < 65536:
            raise ContainerError(StatusCode.INVALID_ARGUMENT, f"port {port} is out of range")
        if len(self.connections) >= MAX_CONNECTIONS:
            raise ContainerError(StatusCode.RESOURCE_EXHAUSTED,
                                 f"{MAX_CONNECTIONS} forwarded connections are open already")
        failure: OSError | None = None
        for host in ("127.0.0.1", "::1"):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(host, port,
                                                                   limit=MAX_CHUNK)
                break
            except (OSError, TimeoutError) as err:
                # the first failure is the telling one (::1 may not even be configured)
                failure = failure or (err if isinstance(err, OSError)
                                      else OSError(f"timed out after {CONNECT_TIMEOUT:g} s"))
        else:
            reason = failure.strerror if failure and failure.strerror else str(failure)
            raise ContainerError(StatusCode.UNAVAILABLE, f"port {port} in the guest: {reason}")
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        number = next(self._numbers)
        self.connections[number] = Connection(reader, writer)
        return number

    def _get(self, number: int) -> Connection:
        connection = self.connections.get(number)
        if connection is None:
            raise ContainerError(StatusCode.NOT_FOUND, f"no forwarded connection {number}")
        return connection

    async def write(self, number: int, data: bytes) -> int:
        connection = self._get(number)
        async with connection.lock:
            try:
                connection.writer.write(data)
                await connection.writer.drain()
            except OSError as err:
                raise ContainerError(StatusCode.FAILED_PRECONDITION,
                                     f"forwarded connection {number}: {err}") from err
        return len(data)

    async def read(self, number: int, size: int) -> bytes:
        connection = self._get(number)
        try:
            return await connection.reader.read(min(size or MAX_CHUNK, MAX_CHUNK))
        except OSError:
            return b""  # a reset reads as the end of the stream

    async def close(self, number: int, write_only: bool) -> None:
        if write_only:
            connection = self._get(number)
            with contextlib.suppress(OSError):
                if connection.writer.can_write_eof():
                    connection.writer.write_eof()
            return
        connection_or_none = self.connections.pop(number, None)
        if connection_or_none is not None:
            connection_or_none.writer.close()

    def close_all(self) -> None:
        for connection in self.connections.values():
            connection.writer.close()
        self.connections.clear()
