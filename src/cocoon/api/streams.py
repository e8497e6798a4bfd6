"""The host ends of a sandboxed process's output: bounded buffers filled from the agent.

A pump reads the process's stdout (or stderr) with the agent's ReadStdout (ReadStderr) calls,
as the CLI's relay does, and puts each chunk in a `Stream`; the caller reads it back. The
buffer holds at most `MAX_CHUNKS` reads: when the caller does not read, the pump stops asking,
the guest's pipe fills and the process blocks on its writes, as it would under a pipe.
"""

from __future__ import annotations

import asyncio

MAX_CHUNKS = 16


class Stream:
    """One output stream of a process, read as bytes (`read`, `readline`, `async for`)."""

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(MAX_CHUNKS)
        self._buffer = b""
        self._eof = False

    async def feed(self, data: bytes) -> None:
        """Add `data` (the pump's side); waits while the buffer is full."""
        await self._chunks.put(data)

    async def feed_eof(self) -> None:
        """Mark the end of the stream (the pump's side)."""
        await self._chunks.put(b"")

    async def _more(self) -> bool:
        if self._eof:
            return False
        chunk = await self._chunks.get()
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (everything to the end when `n` < 0); b"" at the end."""
        if n < 0:
            while await self._more():
                pass
            data, self._buffer = self._buffer, b""
            return data
        if not self._buffer:
            await self._more()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def readline(self) -> bytes:
        """The next line with its newline (without one at the end); b"" at the end."""
        while b"\n" not in self._buffer and await self._more():
            pass
        index = self._buffer.find(b"\n")
        cut = len(self._buffer) if index < 0 else index + 1
        data, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return data

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line
