"""Bulk stdin through a stdio port: the host's bytes copied into the process's pipe by busybox.

Host to guest, a virtio-serial port delivers at most one page per read() (the driver posts
page-sized receive buffers, QEMU's socket chardev reads 4 KiB per main-loop turn), and the
driver has no splice_read: so every 4 KiB costs a read and a write in the guest, which Python
in the guest (under TCG) manages at about 15 MB/s. So native code copies instead: once
the binding's host has proven itself (its token, read exactly: what follows is the process's),
the agent answers one byte (the go-ahead; a host sends nothing after its token before it) and
hands the port and the process's stdin pipe to `cat` as its stdin and stdout, both blocking.

What makes it fast is the copier's priority: at the container's (nice 0), each 4 KiB that
`cat` writes wakes the process, which runs before `cat` fetches the next buffer, and under TCG
every context switch is dear; at nice -5 `cat` moves every buffer already in the port before
the process runs, and the process reads several at once. Measured through `cocoon exec`'s
relay, 50 MB into `cat > /dev/null` (two rounds, a loaded host): nice 0 24-27 MB/s, nice -5
86-93, nice -10 104-117 (a reader that is slow on its own, busybox `wc -c` at about 17 MB/s,
gets 10-17 MB/s whichever); a 256 KiB pipe changed nothing; the port read by busybox `dd`
alone moved 108 MB/s. The copier only runs while bytes arrive, and they arrive no faster than
the process reads them (back-pressure, below), so its priority takes the process nothing it
was not going to wait for.

- End of file: the host shuts its sending side; QEMU reads what is left, then closes the
  connection, and the port's read returns 0 once every byte before that was read: `cat` exits
  and its end of the pipe closes, so the process reads end of file after the last byte.
- Back-pressure: a process that does not read fills its pipe, `cat` blocks in write and stops
  reading the port, the port's receive buffers stay full, QEMU stops reading its socket and the
  host's writes block. Nothing is buffered beyond the pipe, the ring and the sockets.
- The end of the copy (`cat` exited: end of file, or the process closed its stdin) is
  StreamEnd's answer: the host stops sending. Whatever it still sent is read and dropped until
  it hangs up, so the port's next binding never reads this stream's bytes.
- The process exiting (or CloseStdin) kills `cat`: as closing a stdin pipe, the rest is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from dataclasses import dataclass, field

from cocoon.agent.portwait import TOKEN_SIZE, await_token, ready
from cocoon.agent.process import Reaper

logger = logging.getLogger("cocoon.agent.stdinport")

COPIER = "/bin/busybox"
COPIER_ARGV = ["cat"]
COPIER_NICE = -5  # see the module docstring
GO_AHEAD = b"\x01"
DRAIN_READ = 1 << 16


@dataclass(eq=False)
class StdinBinding:
    """One process's stdin fed from one port."""

    port: int
    port_fd: int
    pipe: int | None
    reaper: Reaper
    token: bytes = field(default_factory=lambda: secrets.token_bytes(TOKEN_SIZE))
    written: int = 0  # not counted: the copier does not report it
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    _copier: int = 0
    _copier_done: asyncio.Future[int] | None = None

    async def run(self) -> None:
        try:
            await await_token(self.port_fd, self.token)
            if self.pipe is not None:
                with contextlib.suppress(OSError):  # a host already gone gets end of file
                    os.write(self.port_fd, GO_AHEAD)
                await self._copy()
        except OSError as err:
            logger.warning("stdin port %d: %s", self.port, err)
        finally:
            self.close_pipe()
            self.ended.set()
        await self._drain()

    async def _copy(self) -> None:
        assert self.pipe is not None
        # the copier's descriptors share their file descriptions with the agent's: blocking
        # for it while it runs, the port back to non-blocking once it is gone
        os.set_blocking(self.port_fd, True)
        os.set_blocking(self.pipe, True)
        null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        try:
            self._copier = os.posix_spawn(
                COPIER, COPIER_ARGV, {}, setsigdef=(signal.SIGPIPE,),
                file_actions=[(os.POSIX_SPAWN_DUP2, self.port_fd, 0),
                              (os.POSIX_SPAWN_DUP2, self.pipe, 1),
                              (os.POSIX_SPAWN_DUP2, null, 2)])
            self._copier_done = self.reaper.wait_pid(self._copier)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self._copier, COPIER_NICE)
        finally:
            os.close(null)
            self.close_pipe()  # the copier's end is the process's only writer now
        try:
            status = await asyncio.shield(self._copier_done)
        finally:
            os.set_blocking(self.port_fd, False)
        logger.debug("stdin port %d: the copier exited %d", self.port, status)

    async def _drain(self) -> None:
        """Read and drop what the host still sends, until it has hung up."""
        while True:
            try:
                if not os.read(self.port_fd, DRAIN_READ):
                    return  # nothing left, and nobody connected
            except BlockingIOError:
                await ready(self.port_fd, write=False)
            except OSError as err:
                logger.warning("stdin port %d: %s", self.port, err)
                return

    def close_pipe(self) -> None:
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self.pipe)
            self.pipe = None

    def stop(self) -> None:
        """The process is gone or its stdin was closed: end the copy (the rest is dropped)."""
        self.close_pipe()
        if self._copier_done is None:
            if self.task is not None and not self.ended.is_set():
                self.task.cancel()  # still waiting for its host: nothing was copied
            self.ended.set()
        elif not self._copier_done.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._copier, signal.SIGKILL)
