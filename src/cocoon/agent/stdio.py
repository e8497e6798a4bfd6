"""A container process's streams on the agent side: bounded output buffers and stdin.

The host polls output with ReadStdout/ReadStderr (Kata's model). Output is read from the pipe or
pty into a buffer of at most `limit` bytes; while the buffer is full the agent stops reading, so a
host that does not keep up slows the container down (as a full pipe would) instead of growing the
agent's memory. An empty read answer means end of stream.

A stream can instead be handed to a stdio port (`detach`, `cocoon.agent.stdioports`): the
buffer stops filling, and the port takes the descriptor and what was buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable

DEFAULT_LIMIT = 1 << 20


class OutputStream:
    """Reads a non-blocking descriptor into a bounded buffer until end of file."""

    def __init__(self, fd: int, limit: int = DEFAULT_LIMIT, *, is_pty: bool = False) -> None:
        self.fd = fd
        self.limit = limit
        self.is_pty = is_pty
        self._buffer = bytearray()
        self._eof = False
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._reading = False
        self.detached = False
        self._on_close: Callable[[], None] | None = None
        self._resume()

    @property
    def eof(self) -> bool:
        return self._eof and not self._buffer

    def _resume(self) -> None:
        if not self._reading and not self._eof and not self.detached:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, min(65536, self.limit - len(self._buffer)) or 1)
        except BlockingIOError:
            return
        except OSError as err:
            # a pty master reads EIO once every slave end is closed: that is its end of file
            if err.errno != errno.EIO:
                raise
            data = b""
        if data:
            self._buffer += data
            if len(self._buffer) >= self.limit:
                self._pause()
        else:
            self._finish()
        self._changed.set()

    def _finish(self) -> None:
        self._pause()
        self._eof = True
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def detach(self, on_close: Callable[[], None]) -> tuple[int | None, bytes]:
        """Hand over the descriptor (None once end of file was read) and the buffered bytes;
        from here on this stream reads nothing, and a pending `read` returns b"" at once.
        `close()` calls `on_close` instead (the process is gone: its new owner stops)."""
        if self.detached:
            raise RuntimeError("the stream is already detached")
        self._pause()
        self.detached = True
        self._on_close = on_close
        fd = None if self._eof else self.fd
        self._eof = True
        data = bytes(self._buffer)
        self._buffer.clear()
        self._changed.set()
        return fd, data

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes, waiting until there is data; b"" at end of stream."""
        while not self._buffer and not self._eof:
            self._changed.clear()
            await self._changed.wait()
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        if len(self._buffer) < self.limit:
            self._resume()
        return chunk

    async def drained(self, timeout: float) -> None:
        """Wait until end of file has been read (not necessarily consumed), or `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._eof:
                    self._changed.clear()
                    await self._changed.wait()

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
        if not self._eof and not self.detached:
            self._finish()
        self._buffer.clear()
        self._changed.set()


class InputStream:
    """Writes to a non-blocking descriptor, waiting for room; `close()` gives the reader EOF.

    Bulk stdin can instead be handed to a stdio port (`detach`, `cocoon.agent.stdinport`).
    """

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        os.set_blocking(fd, False)
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self.detached = False
        self._on_close: Callable[[], None] | None = None

    async def detach(self, on_close: Callable[[], None]) -> int | None:
        """Hand over the descriptor (None once closed) after the writes already asked for;
        from here on `write` fails as on a closed stdin, and `close()` calls `on_close`."""
        if self.detached:
            raise RuntimeError("stdin is already detached")
        self.detached = True
        async with self._lock:
            fd, self.fd = self.fd, None
            self._on_close = on_close
        return fd

    async def write(self, data: bytes) -> int:
        async with self._lock:
            view = memoryview(data)
            while view:
                if self.fd is None:
                    raise BrokenPipeError(errno.EPIPE, "stdin is closed")
                try:
                    written = os.write(self.fd, view)
                    view = view[written:]
                except BlockingIOError:
                    await self._writable()
            return len(data)

    async def _writable(self) -> None:
        assert self.fd is not None
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self.fd, wake)
        try:
            await ready
        finally:
            if self.fd is not None:
                self._loop.remove_writer(self.fd)

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
