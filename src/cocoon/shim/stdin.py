"""A process's stdin: containerd's fifo copied to the guest, then its end of file.

The copy goes through a stdio port when one is free, else WriteStdin and CloseStdin
(`cocoon.sandbox.stdinport`).

containerd's clients (ctr, CRI) close their end of the fifo and then call CloseIO. Data can
still be on its way at that moment (in the fifo, or read but not yet written to the guest), so
CloseIO does not cut stdin off: it lets the copy run to the fifo's end of file, which ends the
guest's stdin in order, and only cuts it off when the client keeps its end open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from cocoon.errors import CocoonError, RPCError
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.stdinpipe import STDIN_CHUNK
from cocoon.sandbox.stdinport import deliver_stdin
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.shim.stdin")

CLOSE_GRACE = 2.0  # seconds CloseIO waits for the copy to reach the fifo's end
PROCESS_GONE = (StatusCode.NOT_FOUND, StatusCode.FAILED_PRECONDITION)


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while data := await reader.read(STDIN_CHUNK):
        yield data


class StdinPump:
    def __init__(self, agent: AgentClient, container_id: str, exec_id: str, fd: int,
                 stdio_sockets: Callable[[int], Path] | None = None) -> None:
        self.agent = agent
        self.container_id = container_id
        self.exec_id = exec_id
        self.fd = fd
        self.stdio_sockets = stdio_sockets  # None: WriteStdin only (a terminal, ports off)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stdin {self.container_id}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STDIN_CHUNK)
        pipe = os.fdopen(os.dup(self.fd), "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            await deliver_stdin(self.agent, self.container_id, self.exec_id, _chunks(reader),
                                self.stdio_sockets)
            self._closed = True  # its end of file was delivered (or its stdin is gone)
        except RPCError as err:
            if err.code not in PROCESS_GONE:
                logger.warning("stdin of %s: %s", self.container_id, err)
            return  # the process or its stdin is gone: nothing left to deliver
        except CocoonError as err:
            logger.info("stdin of %s: %s", self.container_id, err)
            return
        finally:
            transport.close()

    async def close_guest(self) -> None:
        """End of file for the guest process (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.agent.close_stdin(self.container_id, self.exec_id)
        except RPCError as err:
            if err.code not in PROCESS_GONE:
                logger.warning("closing stdin of %s: %s", self.container_id, err)
        except CocoonError as err:
            logger.info("closing stdin of %s: %s", self.container_id, err)

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """containerd's CloseIO: deliver what was written, then end the guest's stdin."""
        if self._task is not None and not self._task.done():
            done, _ = await asyncio.wait([self._task], timeout=grace)
            if not done:
                await self.cancel()
        await self.close_guest()

    async def cancel(self) -> None:
        """Stop copying (the process exited, or the shim stops)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CocoonError, OSError):
                await self._task
