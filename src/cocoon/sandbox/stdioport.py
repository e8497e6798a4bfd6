"""The host end of a stdio port: one process's stdout or stderr, read from the port's socket.

The relay asks the agent to bind the stream (BindStream). From then on the guest kernel splices
the process's pipe into the virtio-serial port `cocoon.stdio.<k>` and QEMU writes it to the
unix socket `stdio<k>.sock` in the VM's directory; this side connects, writes the binding's
token (the agent sends nothing before it has read it) and copies the socket to the caller's
descriptor with large buffers, one buffer at a time: while the caller's reader does not keep up,
the socket fills, QEMU stops taking the guest's buffers, the port's queue fills and the
container's writer blocks, as with a pipe.

A port has no end of file of its own: StreamEnd answers with the number of bytes the guest wrote
(T) once the stream ended, and the copy stops when T bytes have arrived. T is the guest's word:
it is never used to size anything, and once it is known a guest that stops sending for
`IDLE_TIMEOUT` is given up on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cocoon.sandbox import portsocket
from cocoon.sandbox.agentclient import AgentClient

logger = logging.getLogger("cocoon.sandbox.stdioport")

BUFFER = 1 << 20
IDLE_TIMEOUT = 10.0  # seconds without a byte from the guest once it said how many are due

Writer = Callable[[int, memoryview], Awaitable[None]]


class PortStream:
    """One output stream carried by a stdio port (see the module docstring)."""

    def __init__(self, agent: AgentClient, container_id: str, exec_id: str, stderr: bool,
                 socket_path: Callable[[int], Path]) -> None:
        self.agent = agent
        self.cid = container_id
        self.eid = exec_id
        self.stderr = stderr
        self.socket_path = socket_path
        self.received = 0
        self.total: int | None = None
        self._last = time.monotonic()
        self._writing = False
        self._port = -1
        self._token = b""

    @property
    def name(self) -> str:
        return f"{self.cid}/{self.eid or 'init'} {'stderr' if self.stderr else 'stdout'}"

    def idle_seconds(self) -> float:
        """Seconds since the last byte from the guest (0 while the caller's reader is slow)."""
        return 0.0 if self._writing else time.monotonic() - self._last

    async def bind(self) -> bool:
        """Ask for a port; False when the stream stays on ReadStdout/ReadStderr."""
        bound = await portsocket.bound(self.agent.bind_stream(self.cid, self.eid, self.stderr))
        if bound is None:
            return False
        self._port, self._token = bound.port, bound.token
        return True

    async def run(self, fd: int | None, write: Writer) -> None:
        """Copy the port to `fd` (None, or a reader gone: drain and drop) until the end."""
        end = asyncio.ensure_future(
            self.agent.stream_end(self.cid, self.eid, self.stderr, timeout=None))
        sock: socket.socket | None = None
        try:
            sock = await portsocket.connect(self.socket_path(self._port), self._token)
            buffer = bytearray(BUFFER)
            view = memoryview(buffer)
            while self.total is None or self.received < self.total:
                count = await self._recv(sock, buffer, end)
                if count is None:
                    self.total = end.result()
                    continue
                if count == 0:
                    logger.info("%s: the VM closed stdio port %d after %d bytes", self.name,
                                   self._port, self.received)
                    return
                self.received += count
                self._last = time.monotonic()
                if fd is not None:
                    fd = await self._write(fd, view[:count], write)
            if self.received > self.total:
                logger.warning("%s: the guest sent %d bytes and said %d", self.name,
                               self.received, self.total)
        finally:
            if sock is not None:
                sock.close()
            await portsocket.forget(end)

    async def _recv(self, sock: socket.socket, buffer: bytearray,
                    end: asyncio.Future[int]) -> int | None:
        """Bytes read into `buffer`, or None when `end` answered first (and was not taken)."""
        loop = asyncio.get_running_loop()
        recv = asyncio.ensure_future(loop.sock_recv_into(sock, buffer))
        waiting: set[asyncio.Future[int]] = {recv}
        if self.total is None:
            waiting.add(end)
        try:
            done, _ = await asyncio.wait(waiting, timeout=None if self.total is None
                                         else IDLE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await portsocket.forget(recv)  # cancelled: the relay stopped, its monitor gone
            raise
        if recv in done:
            return recv.result()
        await portsocket.forget(recv)
        if end in done:
            return None
        raise TimeoutError(f"{self.name}: no byte from the guest for {IDLE_TIMEOUT:.0f} s, "
                           f"{self.received} of the {self.total} it announced")

    async def _write(self, fd: int, data: memoryview, write: Writer) -> int | None:
        self._writing = True
        try:
            await write(fd, data)
            return fd
        except OSError as err:
            if err.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                return None  # the reader went away: keep draining the guest side
            raise
        finally:
            self._writing = False
            self._last = time.monotonic()
