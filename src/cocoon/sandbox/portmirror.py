"""The port mirror: a container's listening TCP ports, reachable where the engine expects them.

A container's loopback is in its VM, not in the network namespace the engine made for it on the
host, and a sandbox on the host network has no namespace of its own at all. So the monitor asks
the agent which TCP ports listen in the guest (a long poll: the agent answers when the set
changes) and, for each, listens on 127.0.0.1:PORT on the host side: in the container's network
namespace (where containerd's CRI PortForward dials `localhost:PORT`), or, on the host network,
in the host's own (as Docker Desktop and Lima mirror a VM's ports). Each connection accepted
there is carried to the guest's loopback over the agent channel (agent/ports.py), one call per
chunk each way: a read is asked for only when the previous chunk has been written out, so
neither side buffers more than a chunk per connection (back-pressure both ways).

A port the host side cannot listen on (taken on the host, or 127.0.0.1 missing in the
namespace) is left out with a warning in the monitor's log, and tried again when it comes back
in the guest. Only loopback is ever bound: the host's other addresses are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket

from cocoon.errors import CocoonError, RPCError
from cocoon.network.netns import run_in_netns
from cocoon.sandbox.agentclient import PORT_CHUNK, AgentClient
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.sandbox.portmirror")

WATCH_WAIT = 30.0        # seconds a ListeningPorts call may wait in the guest for a change
RETRY_DELAY = 1.0        # after a failed ListeningPorts
MAX_CONNECTIONS = 128    # relayed at once per sandbox; more are closed at once
LOOPBACK = "127.0.0.1"


def bind_loopback(port: int, netns: str | None) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` in the namespace at `netns` (None: this
    process's own); OSError when the port is taken or the address is missing."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, port))
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    return make() if netns is None else run_in_netns(netns, make)


class PortMirror:
    """Mirror the guest's listening ports into `netns` (None: the host's loopback)."""

    def __init__(self, agent: AgentClient, netns: str | None, label: str) -> None:
        self.agent = agent
        self.netns = netns
        self.label = label
        self.listeners: dict[int, asyncio.AbstractServer] = {}
        self.unavailable: set[int] = set()  # could not be bound: retried when they come back
        self.connections: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set after every reconciliation (tests wait on it)

    @property
    def where(self) -> str:
        return f"network namespace {self.netns}" if self.netns else "the host's loopback"

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"port-mirror {self.label}")

    async def _watch(self) -> None:
        known: list[int] = []
        while True:
            try:
                ports = await self.agent.listening_ports(known, WATCH_WAIT)
            except RPCError as err:
                if err.code == StatusCode.UNIMPLEMENTED:
                    logger.warning("%s: the agent cannot list its ports: none mirrored",
                                   self.label)
                    return
                logger.debug("%s: listing the guest's ports: %s", self.label, err)
                await asyncio.sleep(RETRY_DELAY)
                continue
            except CocoonError as err:
                logger.debug("%s: listing the guest's ports: %s", self.label, err)
                await asyncio.sleep(RETRY_DELAY)
                continue
            await self.reconcile(ports)
            known = ports

    async def reconcile(self, ports: list[int]) -> None:
        """Listen on exactly the ports the guest listens on."""
        wanted = set(ports)
        for port in sorted(set(self.listeners) - wanted):
            self.listeners.pop(port).close()
            logger.info("%s: port %d no longer mirrored", self.label, port)
        self.unavailable &= wanted
        for port in sorted(wanted - set(self.listeners) - self.unavailable):
            try:
                sock = await asyncio.to_thread(bind_loopback, port, self.netns)
            except (OSError, CocoonError) as err:
                self.unavailable.add(port)
                why = ("taken" if isinstance(err, OSError) and err.errno == errno.EADDRINUSE
                       else str(err))
                logger.warning("%s: guest port %d not mirrored on 127.0.0.1 in %s: %s",
                               self.label, port, self.where, why)
                continue
            self.listeners[port] = await asyncio.start_server(
                functools.partial(self._serve, port), sock=sock)
            logger.info("%s: guest port %d mirrored on 127.0.0.1 in %s", self.label, port,
                        self.where)
        self.changed.set()

    async def _serve(self, port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self.connections) >= MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self.connections.add(task)
        try:
            try:
                number = await self.agent.port_connect(port)
            except CocoonError as err:
                logger.info("%s: a connection to port %d: %s", self.label, port, err)
                return
            try:
                await self._relay(number, reader, writer)
            finally:
                with contextlib.suppress(CocoonError):
                    await self.agent.port_close(number)
        finally:
            self.connections.discard(task)
            writer.close()

    async def _relay(self, number: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        async def to_guest() -> None:
            while data := await reader.read(PORT_CHUNK):
                await self.agent.port_write(number, data)
            await self.agent.port_close(number, write_only=True)

        async def from_guest() -> None:
            while data := await self.agent.port_read(number, PORT_CHUNK):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        tasks = [asyncio.create_task(to_guest()), asyncio.create_task(from_guest())]
        try:
            # both directions end at their end of file; an error in either ends both
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for finished in done:
                if finished.exception() is not None:
                    logger.debug("%s: forwarded connection %d: %s", self.label, number,
                                 finished.exception())
        finally:
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
        connections = list(self.connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
