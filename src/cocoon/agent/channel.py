"""The agent's end of the host-guest channel: a virtio-serial port found by its name.

A virtio-serial port behaves unlike a socket, and each difference shapes this module:

- While no host client is connected to QEMU's chardev, `poll` reports POLLHUP and a read
  returns EOF at once. EOF therefore means "the host left": the agent waits for the next host
  (polling, since epoll would report the hang-up without pause) instead of exiting.
- Closing the port discards whatever the guest kernel has buffered for it, and a host that
  reconnects quickly may already have sent its first request. So the port stays open across
  host connections; it is closed and reopened only after a host broke the protocol, when what
  is buffered is worthless anyway. The port can be open only once (a second open fails with
  EBUSY), so reopening waits until every descriptor of it is closed.
- A host that leaves and comes straight back can go unnoticed: the guest kernel may process
  both "host closed" and "host opened" before the agent reads again, and the byte stream simply
  continues with the new host's bytes. A new ttrpc client starts its stream ids again, so a
  request whose stream id is not above the session's last one marks a new host connection
  (the ttrpc server would call it a protocol violation). The port starts a new session there
  and cuts the old one off, so the old session's late answers do not reach the new host.

`Port.next_session()` hands out one `Session` (a reader and a writer, as for a socket) per host
connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("cocoon.agent.channel")

PORT_NAME = "cocoon.agent"
PORTS_DIR = Path("/sys/class/virtio-ports")
READ_SIZE = 256 * 1024
READ_BATCH = 1 << 20  # at most this much per wakeup, so one busy host cannot starve the loop
READ_LIMIT = 8 << 20
CLOSE_WAIT = 2.0  # seconds for a closed session's descriptors to be released
# the ttrpc frame header (as in cocoon.ttrpc.frame, which the channel need not import)
_HEADER = struct.Struct(">IIBB")
_MAX_DATA = 4 << 20
_REQUEST = 0x01


def find_port(name: str = PORT_NAME, ports_dir: Path = PORTS_DIR, timeout: float = 10.0) -> Path:
    """Return the /dev node of the virtio-serial port called `name` (no udev in the guest)."""
    deadline = time.monotonic() + timeout
    while True:
        if ports_dir.is_dir():
            for entry in sorted(ports_dir.iterdir()):
                try:
                    if (entry / "name").read_text().strip() == name:
                        return Path("/dev") / entry.name
                except OSError:
                    continue
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no virtio-serial port named {name!r} under {ports_dir}")
        time.sleep(0.01)


class _WriteProtocol(asyncio.streams.FlowControlMixin):
    """Flow control for one session's write pipe, and the close waiter StreamWriter expects."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self.closed


@dataclass(eq=False)
class Session:
    """One host connection. `end()` cuts it off: EOF for its reader, its unsent bytes dropped.

    Its writer is made when the session is handed out (making one needs the event loop's await).
    """

    number: int
    reader: asyncio.StreamReader
    last_request: int = 0  # the highest request stream id seen in this session
    ended: bool = False
    _writer: asyncio.StreamWriter | None = field(default=None, repr=False)

    @property
    def writer(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise RuntimeError(f"session {self.number} has not been handed out")
        return self._writer

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if not self.reader.at_eof():
            self.reader.feed_eof()
        if self._writer is not None:
            self._writer.transport.abort()


class Port:
    """The agent's port: one descriptor, split into sessions (see the module docstring)."""

    def __init__(self, device: Path, poll_interval: float = 0.02) -> None:
        self.device = device
        self.poll_interval = poll_interval
        self._fd: int | None = None
        self._reading = False
        self._current: Session | None = None
        self._queue: asyncio.Queue[Session | None] = asyncio.Queue()
        self._sessions = 0
        self._closing: list[asyncio.Future[None]] = []  # write pipes not yet closed
        # frame scanning: the header being collected, the payload bytes still to pass on
        self._header = bytearray()
        self._skip = 0
        self._blind = False  # after an impossible header: pass bytes on, the server objects

    async def next_session(self) -> Session:
        """The next host connection's session (opening the port and waiting for a host first)."""
        while True:
            if not self._reading and self._queue.empty():
                await self._await_host()
                self._begin()
                self._start_reading()
            session = await self._queue.get()
            if session is None or session.ended:
                continue
            await self._attach_writer(session)
            if not session.ended:
                return session

    def finish(self, session: Session) -> None:
        """The agent is done with `session`; if the host did not end it, the stream is spoilt.

        That happens when the ttrpc server gave up on the host's bytes (a protocol error): the
        port is closed, dropping what is buffered, and the next session reopens it.
        """
        session.end()
        if session is self._current:
            self.reset()

    def reset(self) -> None:
        """Close the port, dropping what is buffered."""
        self._stop_reading()
        if self._current is not None:
            self._current.end()
            self._current = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- host connections --------------------------------------------------------------------

    async def _await_host(self) -> None:
        if self._fd is None:
            pending = [f for f in self._closing if not f.done()]
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_WAIT)
            self._fd = os.open(self.device,
                               os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLHUP)
        while any(ev & select.POLLHUP for _, ev in poller.poll(0)):
            await asyncio.sleep(self.poll_interval)

    def _start_reading(self) -> None:
        assert self._fd is not None
        asyncio.get_running_loop().add_reader(self._fd, self._read_ready)
        self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
        self._reading = False

    def _read_ready(self) -> None:
        """Read everything queued, not one buffer per wakeup.

        A virtio-serial read returns at most one 4 KiB buffer; draining the port in one
        callback saves an event-loop turn per buffer, which dominates host->guest throughput
        under TCG.
        """
        assert self._fd is not None
        chunks: list[bytes] = []
        total = 0
        eof = False
        while total < READ_BATCH:
            try:
                data = os.read(self._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                logger.warning("agent port %s: %s", self.device, err)
                eof = True
                break
            if not data:
                eof = True
                break
            chunks.append(data)
            total += len(data)
        if chunks:
            self._received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if not eof or self._fd is None:
            return
        # EOF: the host left (what it sent before has been read)
        self._stop_reading()
        if self._current is not None:
            self._current.end()
            self._current = None
        self._queue.put_nowait(None)

    async def _attach_writer(self, session: Session) -> None:
        """Give the session its writer: a pipe transport on its own duplicate of the port."""
        if self._fd is None:
            session.end()
            return
        loop = asyncio.get_running_loop()
        write_file = os.fdopen(os.dup(self._fd), "wb", buffering=0)
        try:
            transport, protocol = await loop.connect_write_pipe(_WriteProtocol, write_file)
        except BaseException:
            write_file.close()
            raise
        self._closing = [f for f in self._closing if not f.done()]
        self._closing.append(protocol.closed)
        session._writer = asyncio.StreamWriter(transport, protocol, session.reader, loop)
        if session.ended:  # cut off while the writer was being made
            transport.abort()

    def _begin(self) -> None:
        """Start a new session: the bytes from here on are its bytes."""
        previous = self._current
        self._sessions += 1
        self._current = Session(self._sessions, asyncio.StreamReader(limit=READ_LIMIT))
        self._header.clear()
        self._skip = 0
        self._blind = False
        if previous is not None:
            previous.end()
        self._queue.put_nowait(self._current)

    # --- the byte stream ---------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        """Pass bytes to the current session, starting a new one where a new client begins."""
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._blind:
                self._feed(view[pos:])
                return
            if self._skip:
                take = min(self._skip, end - pos)
                self._feed(view[pos:pos + take])
                self._skip -= take
                pos += take
                continue
            take = min(_HEADER.size - len(self._header), end - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) < _HEADER.size:
                return
            header = bytes(self._header)
            length, stream_id, type_, _ = _HEADER.unpack(header)
            current = self._current
            if type_ == _REQUEST and current is not None:
                if current.last_request and stream_id <= current.last_request:
                    logger.info("host session %d: a request reuses stream id %d: a new host "
                                "client (the previous one left unnoticed)", current.number,
                                stream_id)
                    self._begin()
                    assert self._current is not None
                    current = self._current
                current.last_request = max(current.last_request, stream_id)
            self._header.clear()
            if length > _MAX_DATA:
                self._blind = True
            else:
                self._skip = length
            self._feed(header)

    def _feed(self, data: bytes | memoryview) -> None:
        if data and self._current is not None and not self._current.ended:
            self._current.reader.feed_data(bytes(data))
