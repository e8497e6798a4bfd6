"""The monitor's end of the shim wire: one stdio relay per attached per-process shim.

A per-process shim (`cocoon.runtime.shimproc`) hands its stdio to the monitor over the shim
socket (`cocoon.runtime.shimwire`), forwards its signals and waits for the exit status; the
relay itself (`ProcessRelay`) runs here, beside the agent channel, through the monitor's own
client of its proxy. What a shim sends is checked like anything else from outside: one attach
with the right number of descriptors, bounded lines, known messages; anything else ends that
shim's connection (and the shim exits as killed) without touching the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cocoon.errors import CocoonError
from cocoon.runtime import shimwire
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.relay import ProcessRelay, Stdio

logger = logging.getLogger("cocoon.sandbox.shimserver")

ATTACH_TIMEOUT = 10.0


class ShimServer:
    def __init__(self, sandbox_id: str, agent: AgentClient,
                 stdio_sockets: Callable[[int], Path] | None = None) -> None:
        self.sandbox_id = sandbox_id
        self.agent = agent
        self.stdio_sockets = stdio_sockets
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                             | socket.SOCK_CLOEXEC)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(64)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._serve(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _first(self, conn: socket.socket) -> tuple[bytes, list[int]]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), readable)
        try:
            async with asyncio.timeout(ATTACH_TIMEOUT):
                await ready
        finally:
            loop.remove_reader(conn.fileno())
        return shimwire.recv_with_fds(conn)

    async def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            data, fds = await self._first(conn)
            line, _, rest = data.partition(b"\n")
            stdio, cid, eid = _attach(shimwire.decode(line), fds)
            reader, writer = await asyncio.open_unix_connection(sock=conn)
            if rest:
                reader.feed_data(rest)
            relay = ProcessRelay(self.agent, cid, eid, stdio, self.stdio_sockets)
            await self._relay(relay, reader, writer)
        except (ValueError, KeyError, TypeError, OSError, TimeoutError) as err:
            logger.warning("sandbox %s: a shim was refused: %s", self.sandbox_id, err)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    async def _relay(self, relay: ProcessRelay, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        control = asyncio.create_task(self._control(relay, reader))
        try:
            status = await relay.run(forward_signals=False)
        except CocoonError as err:
            logger.warning("sandbox %s: relay of %s/%s: %s", self.sandbox_id, relay.cid,
                           relay.eid or "init", err)
            status = shimwire.LOST_STATUS
        finally:
            control.cancel()
            await asyncio.gather(control, return_exceptions=True)
        with contextlib.suppress(OSError):
            writer.write(shimwire.encode({"exit": status}))
            await writer.drain()
        writer.close()

    async def _control(self, relay: ProcessRelay, reader: asyncio.StreamReader) -> None:
        """Signals and window changes from the shim, for the guest process. The shim is the
        process's stand-in on the host, the pid the engine waits on and `state` reports: when
        it goes away before the process has ended (killed), the process is killed in the guest
        (as runc's container dies with its init), so that `stopped` is true and nothing runs
        on out of reach of `kill` and `exec`."""
        while True:
            try:
                line = await reader.readuntil(b"\n")
                message = shimwire.decode(line)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError,
                    ValueError):
                logger.warning("sandbox %s: the shim of %s/%s went away: killing the process",
                               self.sandbox_id, relay.cid, relay.eid or "init")
                await relay.send_signal(signal.SIGKILL)
                return
            if "signal" in message:
                sig = int(message["signal"])
                if 0 < sig < 65:
                    await relay.send_signal(sig)
            elif message.get("resize"):
                await relay.resize()


def _attach(message: dict[str, Any], fds: list[int]) -> tuple[Stdio, str, str]:
    attach = message["attach"]
    cid, eid, terminal = str(attach["container_id"]), str(attach.get("exec_id") or ""), \
        bool(attach.get("terminal"))
    if len(fds) != (1 if terminal else 3):
        raise ValueError(f"an attach of {cid}/{eid or 'init'} came with {len(fds)} descriptors")
    if terminal:
        return Stdio(stdin=fds[0], stdout=fds[0], stderr=None, terminal=True,
                     tty_fd=fds[0]), cid, eid
    return Stdio(stdin=fds[0], stdout=fds[1], stderr=fds[2]), cid, eid
