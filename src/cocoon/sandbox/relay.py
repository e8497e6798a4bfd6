"""The host stand-in for one guest process: stdio relayed, signals forwarded, exit status kept.

This is the body of the per-process shim (and of `cocoon run` and `cocoon exec` in the
foreground). Output without a terminal goes through a stdio port when the VM has one free
(`cocoon.sandbox.stdioport`); otherwise it is pulled with ReadStdout/ReadStderr until the guest
reports end of stream;
stdin goes through a stdio port too, or is pushed with WriteStdin and closed with CloseStdin
(`cocoon.sandbox.stdinport`); every catchable
signal the host process receives goes to the guest process; the result is the guest process's
exit status in the shell's form (128 + n for a signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import stat
import struct
import termios
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cocoon.config import current as settings
from cocoon.errors import CocoonError, RPCError
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.stdinpipe import STDIN_CHUNK
from cocoon.sandbox.stdinport import deliver_stdin
from cocoon.sandbox.stdioport import PortStream
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.sandbox.relay")

READ_SIZE = 1 << 20
DRAIN_AFTER_EXIT = 5.0  # seconds to keep reading output after the process exited
# signals a stand-in must not forward: they are about the stand-in itself
NOT_FORWARDED = {signal.SIGCHLD, signal.SIGWINCH, signal.SIGPIPE, signal.SIGURG,
                 signal.SIGKILL, signal.SIGSTOP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP}
NO_CALL_TIMEOUT = None


@dataclass
class Stdio:
    stdin: int | None
    stdout: int | None
    stderr: int | None
    terminal: bool = False
    tty_fd: int | None = None  # host terminal whose size the guest follows


async def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write everything without threads (a shim that left its pid namespace cannot start one)
    and without blocking the loop: a full pipe or terminal is waited for with the selector."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_writer(fd, wake)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


def pollable(fd: int) -> bool:
    """Whether the event loop can watch `fd` (pipes, sockets, ttys; not files or /dev/null)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return False
    probe = select.epoll()
    try:
        probe.register(fd, select.EPOLLIN)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


class ProcessRelay:
    """`stdio_sockets` names the socket of the VM's stdio port k (None: ReadStdout only)."""

    def __init__(self, agent: AgentClient, container_id: str, exec_id: str,
                 stdio: Stdio, stdio_sockets: Callable[[int], Path] | None = None) -> None:
        self.agent = agent
        self.cid = container_id
        self.eid = exec_id
        self.stdio = stdio
        # runtime.stdio_ports off (COCOON_STDIO_PORTS=0): every stream through ReadStdout, a
        # baseline for benchmarks and a way around the ports should they misbehave
        self.stdio_sockets = stdio_sockets if settings().runtime.stdio_ports else None
        self._loop = asyncio.get_event_loop()
        self._signals: list[int] = []
        self.port_streams: list[PortStream] = []
        self.stdin_port: int | None = None  # the stdio port stdin went through, if one

    # --- output ----------------------------------------------------------------------------

    async def _pump_out(self, stderr: bool, fd: int | None) -> None:
        if self.stdio_sockets is not None and not self.stdio.terminal:
            port = PortStream(self.agent, self.cid, self.eid, stderr, self.stdio_sockets)
            if await port.bind():
                self.port_streams.append(port)
                await port.run(fd, write_all)
                return
        read = self.agent.read_stderr if stderr else self.agent.read_stdout
        while True:
            try:
                data = await read(self.cid, self.eid, READ_SIZE, timeout=NO_CALL_TIMEOUT)
            except RPCError as err:
                if err.code in (StatusCode.NOT_FOUND,):
                    return
                raise
            if not data:
                return
            if fd is not None:
                try:
                    await write_all(fd, data)
                except OSError as err:
                    if err.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                        fd = None  # the reader went away: keep draining the guest side
                    else:
                        raise

    # --- input -----------------------------------------------------------------------------

    async def _pump_in(self, fd: int) -> None:
        reader = asyncio.StreamReader(limit=READ_SIZE)
        transport = None
        if pollable(fd):
            file = os.fdopen(os.dup(fd), "rb", buffering=0)
            transport, _ = await self._loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), file)
        try:
            if transport is None:
                data_source = self._blocking_reads(fd)
            else:
                data_source = self._stream_reads(reader)
            sockets = None if self.stdio.terminal else self.stdio_sockets
            await deliver_stdin(self.agent, self.cid, self.eid, data_source, sockets,
                                self._stdin_bound)
        except RPCError as err:
            if err.code not in (StatusCode.NOT_FOUND, StatusCode.FAILED_PRECONDITION):
                raise
        finally:
            if transport is not None:
                transport.close()

    def _stdin_bound(self, port: int) -> None:
        self.stdin_port = port

    @staticmethod
    async def _stream_reads(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while data := await reader.read(STDIN_CHUNK):
            yield data

    async def _blocking_reads(self, fd: int) -> AsyncIterator[bytes]:
        # regular files and /dev/null cannot be watched by the event loop, and never block
        while data := os.read(fd, STDIN_CHUNK):
            yield data
            await asyncio.sleep(0)

    # --- signals and terminal ----------------------------------------------------------------

    def _install_signals(self) -> None:
        for sig in signal.valid_signals():
            if sig in NOT_FORWARDED or not 0 < sig < 65:
                continue
            try:
                self._loop.add_signal_handler(sig, self._forward, sig)
                self._signals.append(sig)
            except (ValueError, RuntimeError, OSError):
                continue
        if self.stdio.terminal and self.stdio.tty_fd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.add_signal_handler(signal.SIGWINCH, self._resize)
                self._signals.append(signal.SIGWINCH)

    def _forward(self, sig: int) -> None:
        self._loop.create_task(self.send_signal(sig))

    async def send_signal(self, sig: int) -> None:
        with contextlib.suppress(CocoonError):
            await self.agent.signal_process(self.cid, self.eid, sig, timeout=10.0)

    def _resize(self) -> None:
        self._loop.create_task(self.resize())

    async def resize(self) -> None:
        if self.stdio.tty_fd is None:
            return
        size = terminal_size(self.stdio.tty_fd)
        if size is None:
            return
        with contextlib.suppress(CocoonError):
            await self.agent.tty_win_resize(self.cid, self.eid, size[0], size[1])

    def _remove_signals(self) -> None:
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)
        self._signals.clear()

    async def _drain(self, outputs: list[asyncio.Task[None]]) -> None:
        """After the exit: wait for the rest of the output, all of it while a port's bytes keep
        coming (or the caller's reader is slow), else up to DRAIN_AFTER_EXIT."""
        deadline = time.monotonic() + DRAIN_AFTER_EXIT
        pending = {t for t in outputs if not t.done()}
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            if time.monotonic() < deadline:
                continue
            if not any(p.idle_seconds() < DRAIN_AFTER_EXIT and p.total != p.received
                       for p in self.port_streams):
                return

    # --- the whole relay -----------------------------------------------------------------------

    async def run(self, forward_signals: bool = True) -> int:
        # non-blocking output for the selector; the mode belongs to a file description the
        # caller shares (a shell's terminal), so it is restored at the end
        restore = [fd for fd in {self.stdio.stdout, self.stdio.stderr}
                   if fd is not None and pollable(fd) and os.get_blocking(fd)]
        for fd in restore:
            os.set_blocking(fd, False)
        try:
            return await self._run(forward_signals)
        finally:
            for fd in restore:
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, True)

    async def _run(self, forward_signals: bool) -> int:
        if forward_signals:
            self._install_signals()
        tasks: list[asyncio.Task[None]] = []
        try:
            outputs = [asyncio.create_task(self._pump_out(False, self.stdio.stdout))]
            if not self.stdio.terminal:
                outputs.append(asyncio.create_task(self._pump_out(True, self.stdio.stderr)))
            tasks.extend(outputs)
            if self.stdio.stdin is not None:
                tasks.append(asyncio.create_task(self._pump_in(self.stdio.stdin)))
            if self.stdio.terminal:
                await self.resize()
            status = await self.agent.wait_process(self.cid, self.eid, timeout=NO_CALL_TIMEOUT)
            if not 0 <= status <= 255:
                logger.warning("guest reported exit status %d; using 255", status)
                status = 255
            await self._drain(outputs)
            return status
        finally:
            self._remove_signals()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
