"""The host end of a process's stdin: through a stdio port when one is free, else WriteStdin.

`deliver_stdin` is the one way the relay (CLI run/exec, per-process shims) and the containerd
shim's stdin pump hand a caller's stdin to a guest process, ending with its end of file:

- Nothing to send (the caller's stdin ends at once): CloseStdin, no port taken.
- Otherwise, for a process without a terminal, BindStdin asks for a port
  (`cocoon.agent.stdinport`): connect to its socket, write the token, wait for the agent's
  one-byte go-ahead (a host sends nothing else before it, so a late host of an earlier binding
  never puts bytes before the next binding's token), then send with large writes. The end of
  file is `shutdown(SHUT_WR)`, and the socket stays open until QEMU closes its side: QEMU drops
  what it has not read yet when its peer hangs up for good, so a full close would cut the tail.
  StreamEnd answering first means the process's stdin is gone: the rest is dropped, as
  WriteStdin's EPIPE dropped it.
- No free port, an agent without the call, a terminal or the ports turned off: WriteStdin,
  pipelined (`cocoon.sandbox.stdinpipe`), then CloseStdin.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cocoon.sandbox import portsocket
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.stdinpipe import write_pipelined

logger = logging.getLogger("cocoon.sandbox.stdinport")

GO_AHEAD = b"\x01"
SEND_BUFFER = 1 << 20
T = TypeVar("T")


class _Ended(Exception):
    """The guest ended the copy (the process's stdin is gone) before the host was done."""


async def _chunks_after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for data in rest:
        yield data


class StdinPort:
    """One process's stdin carried by a stdio port (see the module docstring)."""

    def __init__(self, agent: AgentClient, container_id: str, exec_id: str,
                 socket_path: Callable[[int], Path]) -> None:
        self.agent = agent
        self.cid = container_id
        self.eid = exec_id
        self.socket_path = socket_path
        self.port = -1
        self._token = b""
        self.sent = 0

    @property
    def name(self) -> str:
        return f"{self.cid}/{self.eid or 'init'} stdin"

    async def bind(self) -> bool:
        """Ask for a port; False when stdin stays on WriteStdin."""
        bound = await portsocket.bound(self.agent.bind_stdin(self.cid, self.eid))
        if bound is None:
            return False
        self.port, self._token = bound.port, bound.token
        return True

    async def run(self, chunks: AsyncIterator[bytes]) -> bool:
        """Send every chunk, then end of file; False if the guest ended the copy first."""
        loop = asyncio.get_running_loop()
        end = asyncio.ensure_future(
            self.agent.stream_end(self.cid, self.eid, False, stdin=True, timeout=None))
        sock: socket.socket | None = None
        try:
            sock = await portsocket.connect(self.socket_path(self.port), self._token,
                                            SEND_BUFFER)
            answer = await self._unless_ended(loop.sock_recv(sock, 1), end)
            if answer != GO_AHEAD:
                logger.info("%s: stdio port %d closed before the go-ahead", self.name,
                            self.port)
                return False
            async for data in chunks:
                await self._unless_ended(loop.sock_sendall(sock, data), end)
                self.sent += len(data)
            sock.shutdown(socket.SHUT_WR)
            # QEMU closes once it has read the end; closing before would drop the tail
            await self._unless_ended(loop.sock_recv(sock, 1), end)
            return True
        except _Ended:
            return False
        finally:
            if sock is not None:
                sock.close()
            await portsocket.forget(end)

    @staticmethod
    async def _unless_ended(step: Awaitable[T], end: asyncio.Future[int]) -> T:
        task = asyncio.ensure_future(step)
        waiting: set[asyncio.Future[Any]] = {task, end}
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await portsocket.forget(task)  # cancelled: the step must not outlive the call
            raise
        if task in done:
            return task.result()
        await portsocket.forget(task)
        raise _Ended()


async def deliver_stdin(agent: AgentClient, container_id: str, exec_id: str,
                        chunks: AsyncIterator[bytes],
                        socket_path: Callable[[int], Path] | None,
                        on_port: Callable[[int], None] | None = None) -> None:
    """All of `chunks` to the process's stdin, then its end of file (see the module docstring).

    `socket_path` names stdio port k's socket (None: WriteStdin only); `on_port` is told the
    port once one is bound. RPCErrors of WriteStdin and CloseStdin reach the caller, as before
    ports.
    """
    first = await anext(chunks, None)
    if first is None:
        await agent.close_stdin(container_id, exec_id)
        return
    data = _chunks_after(first, chunks)
    if socket_path is not None:
        port = StdinPort(agent, container_id, exec_id, socket_path)
        if await port.bind():
            logger.debug("%s: through stdio port %d", port.name, port.port)
            if on_port is not None:
                on_port(port.port)
            if not await port.run(data):
                logger.info("%s: the process's stdin ended after %d bytes", port.name,
                            port.sent)
            return
    await write_pipelined(agent, container_id, exec_id, data)
    await agent.close_stdin(container_id, exec_id)
