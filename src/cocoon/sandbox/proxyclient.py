"""One local client of the agent proxy, as the proxy sees it: its streams and a bounded queue
of the frames on their way to it.

The proxy reads the agent channel on behalf of every client. Frames for a client go into that
client's queue, and a task of its own (`pump`) writes them to its socket as fast as the client
reads; so a client that stops reading fills its own queue, not the channel. What the proxy does when
a queue is full (wait for room, or drop the client) is the proxy's decision (`proxy.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

# Frames queued for one client, in bytes. A full queue always takes one frame more, so a
# frame of any legal size (up to 4 MiB) gets through to a client that reads.
QUEUE_BYTES = 1 << 20


@dataclass(eq=False)
class ProxyClient:
    name: str
    writer: asyncio.StreamWriter
    # a client whose queue may be dropped when it overflows; the monitor's own is not
    droppable: bool = True
    # set whenever the queue shrinks or the client goes: a delivery waiting for room looks again
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    streams: dict[int, int] = field(default_factory=dict)  # client stream id -> agent stream id
    closed: bool = False
    queue: deque[bytes] = field(default_factory=deque)
    queued: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)  # the queue has something

    def fits(self, size: int) -> bool:
        return not self.queue or self.queued + size <= QUEUE_BYTES

    def put(self, data: bytes) -> None:
        """Queue `data` (the caller checked `fits`, or overflows on purpose: a few bytes)."""
        if self.closed:
            return
        self.queue.append(data)
        self.queued += len(data)
        self._ready.set()

    def take(self) -> bytes:
        """Everything queued, taken off the queue (for callers that write it themselves)."""
        data = b"".join(self.queue)
        self.queue.clear()
        self.queued = 0
        self.wake.set()
        return data

    async def pump(self) -> None:
        """Write what is queued as fast as the client reads it, until the client goes (the
        proxy runs this beside the client's requests)."""
        try:
            while not self.closed:
                if not self.queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                data = self.queue.popleft()  # the queue holds only what was not written
                self.queued -= len(data)
                self.writer.write(data)
                await self.writer.drain()
                self.wake.set()
        except (ConnectionError, OSError):
            self._gone()

    def _gone(self) -> None:
        self.closed = True
        self.queue.clear()
        self.queued = 0
        self._ready.set()
        self.wake.set()

    def drop(self) -> None:
        """Close the client at once, whatever it has queued (it stopped reading)."""
        self._gone()
        transport = getattr(self.writer, "transport", None)
        if transport is not None:
            transport.abort()
        else:
            self.writer.close()

    def close(self) -> None:
        """The client left: what is queued goes to the transport, which flushes it as it
        closes (no more than a queue's worth)."""
        if not self.closed:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                self.writer.write(self.take())
        self._gone()
        self.writer.close()
