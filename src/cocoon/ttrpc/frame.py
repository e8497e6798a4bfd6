"""ttrpc framing: the 10-byte header and the frames it delimits, without any I/O.

Kept apart from stream and RPC meaning so that the proxy can move raw frames between peers
(remapping stream ids) with nothing but this module. The decoder is fed whatever the transport
delivers, in any chunking, and never holds more than one frame's worth of bytes: an oversized
length is refused as soon as its header is complete, before a byte of its payload is kept.

    +--------------------------------+--------------------------------+--------+--------+-----
    | data length (u32, big-endian)  | stream id (u32, big-endian)    | type   | flags  | data
    +--------------------------------+--------------------------------+--------+--------+-----
      bytes 0-3                        bytes 4-7                        byte 8   byte 9
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from cocoon.errors import OversizedMessageError, ProtocolError

HEADER_SIZE = 10
MAX_DATA_SIZE = 4 << 20
MAX_STREAM_ID = 0xFFFF_FFFF

_HEADER = struct.Struct(">IIBB")


class MessageType(enum.IntEnum):
    """The frame types; anything else on the wire is a protocol error (checked above this layer)."""

    REQUEST = 0x01
    RESPONSE = 0x02
    DATA = 0x03


class Flags(enum.IntFlag):
    """Frame flags. Their meaning depends on the type (see docs/agent-protocol.md)."""

    NONE = 0x00
    REMOTE_CLOSED = 0x01  # request and data: the sender will send no more data on this stream
    REMOTE_OPEN = 0x02  # request only: data frames from the sender follow
    NO_DATA = 0x04  # data only: the frame carries no message (used with REMOTE_CLOSED)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame; `type` stays a plain int so unknown types reach the layer that judges them."""

    stream_id: int
    type: int
    flags: int = 0
    data: bytes = b""


def encode_header(length: int, stream_id: int, type_: int, flags: int) -> bytes:
    """Pack a header; the proxy uses this to re-emit a payload under another stream id."""
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} does not fit in 32 bits")
    if not (0 <= type_ <= 0xFF and 0 <= flags <= 0xFF):
        raise ValueError(f"type {type_} or flags {flags} do not fit in a byte")
    return _HEADER.pack(length, stream_id, type_, flags)


def encode_frame(frame: Frame, max_size: int = MAX_DATA_SIZE) -> bytes:
    """The frame's bytes; an oversized payload is refused here, never sent."""
    length = len(frame.data)
    if length > max_size:
        raise OversizedMessageError(length, max_size)
    return encode_header(length, frame.stream_id, frame.type, frame.flags) + frame.data


class FrameDecoder:
    """Turns a byte stream into frames.

    `feed()` parses eagerly: complete frames are queued (iterate the decoder or call
    `next_frame()` to take them) and only the incomplete tail is kept, so `buffered` never exceeds
    `max_size`. After a `ProtocolError` the decoder is spent: every later `feed()` raises again,
    while frames completed before the bad header can still be taken.
    """

    def __init__(self, max_size: int = MAX_DATA_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()  # the incomplete header, or the incomplete payload
        self._header: tuple[int, int, int, int] | None = None  # (length, stream, type, flags)
        self._ready: deque[Frame] = deque()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress."""
        return len(self._buf)

    @property
    def failed(self) -> ProtocolError | None:
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise ProtocolError(f"ttrpc stream already broken: {self._error}",
                                cause=self._error) from self._error
        view = memoryview(data)
        end = len(view)
        pos = 0
        buf = self._buf
        while pos < end:
            header = self._header
            if header is None:
                if not buf and end - pos >= HEADER_SIZE:
                    header = _HEADER.unpack_from(view, pos)
                    pos += HEADER_SIZE
                else:
                    take = min(HEADER_SIZE - len(buf), end - pos)
                    buf += view[pos:pos + take]
                    pos += take
                    if len(buf) < HEADER_SIZE:
                        break
                    header = _HEADER.unpack_from(buf)
                    buf.clear()
                if header[0] > self.max_size:
                    self._error = OversizedMessageError(header[0], self.max_size)
                    self._error.evidence["stream_id"] = header[1]
                    raise self._error
                self._header = header
            length = header[0]
            if not buf and end - pos >= length:
                payload = bytes(view[pos:pos + length])
                pos += length
            else:
                take = min(length - len(buf), end - pos)
                buf += view[pos:pos + take]
                pos += take
                if len(buf) < length:
                    break
                payload = bytes(buf)
                buf.clear()
            self._ready.append(Frame(header[1], header[2], header[3], payload))
            self._header = None

    def next_frame(self) -> Frame | None:
        return self._ready.popleft() if self._ready else None

    def __iter__(self) -> Iterator[Frame]:
        while self._ready:
            yield self._ready.popleft()
