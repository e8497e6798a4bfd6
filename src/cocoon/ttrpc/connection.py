"""ttrpc connections without I/O: per-stream state, validation of what the peer sends, events.

Feed received bytes with `receive_data()`, take what they meant from `events()`, and send the
bytes that the `send_*`/`start_request` methods return. A peer that breaks the protocol makes
`events()` raise `ProtocolError` (after yielding the events that came before the fault); the
connection is then spent and should be closed.

Each stream has two halves, as in containerd/ttrpc: local-closed (we send no more data) and
remote-closed (the peer sends no more). A client opens odd, increasing stream ids; the server
finishes a stream with a response or a closing data frame. A side that finishes or abandons a
stream while the peer may still be sending keeps its id in a "draining" set, so that frames
already in flight are dropped quietly instead of being taken for a protocol violation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError

from cocoon.errors import ProtocolError, TtrpcError
from cocoon.protocols.gen import ttrpc_pb2
from cocoon.ttrpc.frame import (
    MAX_DATA_SIZE,
    MAX_STREAM_ID,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    encode_frame,
)
from cocoon.ttrpc.status import Status

MetadataPairs = tuple[tuple[str, str], ...]

# Plain ints for the per-frame checks (IntFlag arithmetic is slow in CPython 3.11).
_CLOSED = int(Flags.REMOTE_CLOSED)
_OPEN = int(Flags.REMOTE_OPEN)
_NO_DATA = int(Flags.NO_DATA)
_CLOSE = _CLOSED | _NO_DATA


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A client opened a stream (server side)."""

    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: MetadataPairs
    flags: int

    @property
    def unary(self) -> bool:
        return not self.flags & (_CLOSED | _OPEN)

    @property
    def remote_open(self) -> bool:
        """The client will send data frames on this stream."""
        return bool(self.flags & _OPEN)


@dataclass(frozen=True, slots=True)
class DataReceived:
    """A data frame on an open stream. `data` is None when the frame says it carries none."""

    stream_id: int
    data: bytes | None
    end_stream: bool


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The server finished a stream with a status (client side)."""

    stream_id: int
    status: Status
    payload: bytes


Event = RequestReceived | DataReceived | ResponseReceived
ServerEvent = RequestReceived | DataReceived
ClientEvent = ResponseReceived | DataReceived
E = TypeVar("E", ServerEvent, ClientEvent)


@dataclass(slots=True)
class _Stream:
    unary: bool
    local_closed: bool
    remote_closed: bool


class _Connection(Generic[E]):
    role = ""

    def __init__(self, max_size: int = MAX_DATA_SIZE) -> None:
        self.max_size = max_size
        self._decoder = FrameDecoder(max_size)
        self._streams: dict[int, _Stream] = {}
        self._draining: set[int] = set()
        self._pending_error: ProtocolError | None = None
        self._failed: ProtocolError | None = None

    @property
    def open_streams(self) -> frozenset[int]:
        return frozenset(self._streams)

    @property
    def failed(self) -> ProtocolError | None:
        return self._failed

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending_error is not None or self._failed is not None:
            return
        try:
            self._decoder.feed(data)
        except ProtocolError as err:
            self._pending_error = err

    def events(self) -> Iterator[E]:
        if self._failed is not None:
            raise self._again()
        while (frame := self._decoder.next_frame()) is not None:
            try:
                event = self._handle(frame)
            except ProtocolError as err:
                self._failed = err
                raise
            if event is not None:
                yield event
        if self._pending_error is not None:
            self._failed, self._pending_error = self._pending_error, None
            raise self._failed

    def _again(self) -> ProtocolError:
        assert self._failed is not None
        return ProtocolError(f"ttrpc connection already broken: {self._failed}",
                             cause=self._failed)

    def _handle(self, frame: Frame) -> E | None:
        raise NotImplementedError

    def _violation(self, what: str, frame: Frame) -> ProtocolError:
        return ProtocolError(f"ttrpc peer broke the protocol: {what}", role=self.role,
                             stream_id=frame.stream_id, type=frame.type, flags=frame.flags,
                             length=len(frame.data))

    def _check_frame(self, frame: Frame) -> None:
        if frame.type not in (MessageType.REQUEST, MessageType.RESPONSE, MessageType.DATA):
            raise self._violation(f"unknown message type {frame.type:#04x}", frame)
        if frame.stream_id == 0:
            raise self._violation("stream id 0", frame)
        if frame.stream_id % 2 == 0:
            raise self._violation(
                f"even stream id {frame.stream_id} (only clients open streams, on odd ids)", frame)

    def _data_payload(self, frame: Frame) -> bytes | None:
        if frame.flags & _NO_DATA:
            if frame.data:
                raise self._violation("a data frame flagged no-data carries bytes", frame)
            return None
        return frame.data

    def _stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise TtrpcError(f"ttrpc stream {stream_id} is not open", stream_id=stream_id)
        return stream

    def _encode(self, stream_id: int, type_: MessageType, flags: int, data: bytes) -> bytes:
        return encode_frame(Frame(stream_id, type_, flags, data), self.max_size)

    def _sendable(self, stream_id: int) -> _Stream:
        stream = self._stream(stream_id)
        if stream.unary:
            raise TtrpcError(f"ttrpc stream {stream_id} is unary: no data frames allowed",
                             stream_id=stream_id)
        if stream.local_closed:
            raise TtrpcError(f"ttrpc stream {stream_id} is closed for sending",
                             stream_id=stream_id)
        return stream

    @staticmethod
    def _data_flags(end_stream: bool) -> Flags:
        return Flags.REMOTE_CLOSED if end_stream else Flags.NONE


class ClientConnection(_Connection[ClientEvent]):
    """The side that dials: opens streams with requests and receives responses and data."""

    role = "client"

    def __init__(self, max_size: int = MAX_DATA_SIZE) -> None:
        super().__init__(max_size)
        self._next_stream_id = 1

    def start_request(self, service: str, method: str, payload: bytes = b"", *,
                      timeout_nano: int = 0, metadata: Iterable[tuple[str, str]] = (),
                      client_streaming: bool = False,
                      server_streaming: bool = False) -> tuple[int, bytes]:
        """Open a stream: returns its id and the request frame.

        Flags follow containerd/ttrpc: none for a unary call, remote-open when the client will
        stream, remote-closed when only the server streams.
        """
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise TtrpcError("ttrpc stream ids exhausted on this connection: reconnect")
        request = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=timeout_nano,
            metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in metadata])
        if client_streaming:
            flags = Flags.REMOTE_OPEN
        elif server_streaming:
            flags = Flags.REMOTE_CLOSED
        else:
            flags = Flags.NONE
        out = self._encode(stream_id, MessageType.REQUEST, flags, request.SerializeToString())
        self._next_stream_id += 2
        unary = not (client_streaming or server_streaming)
        self._streams[stream_id] = _Stream(unary=unary, local_closed=not client_streaming,
                                           remote_closed=False)
        return stream_id, out

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> bytes:
        stream = self._sendable(stream_id)
        if stream.remote_closed:
            raise TtrpcError(f"the server finished ttrpc stream {stream_id}", stream_id=stream_id)
        out = self._encode(stream_id, MessageType.DATA, self._data_flags(end_stream), data)
        if end_stream:
            self._close_local(stream_id, stream)
        return out

    def close_send(self, stream_id: int) -> bytes:
        """Tell the server we are done sending (a data frame flagged remote-closed, no-data)."""
        stream = self._sendable(stream_id)
        out = self._encode(stream_id, MessageType.DATA, _CLOSE, b"")
        self._close_local(stream_id, stream)
        return out

    def _close_local(self, stream_id: int, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self._streams[stream_id]

    def abandon(self, stream_id: int) -> bytes:
        """Forget a stream we no longer care about (cancelled, timed out); idempotent.

        Returns a closing data frame to send when our side was still open, so that the server's
        handler sees the end of its input; b"" otherwise. What the server still sends on the
        stream is dropped.
        """
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return b""
        out = b""
        if not stream.local_closed:
            out = self._encode(stream_id, MessageType.DATA,
                               _CLOSE, b"")
        if not stream.remote_closed:
            self._draining.add(stream_id)
        return out

    def _handle(self, frame: Frame) -> ClientEvent | None:
        self._check_frame(frame)
        sid = frame.stream_id
        if frame.type == MessageType.REQUEST:
            raise self._violation("the server sent a request (server-initiated streams are not "
                                  "supported)", frame)
        if sid >= self._next_stream_id:
            raise self._violation(f"{MessageType(frame.type).name.lower()} on stream {sid}, "
                                  "which was never opened", frame)
        if sid in self._draining:
            if frame.type == MessageType.RESPONSE or frame.flags & _CLOSED:
                self._draining.discard(sid)
            return None
        stream = self._streams.get(sid)
        if stream is None or stream.remote_closed:
            raise self._violation(f"{MessageType(frame.type).name.lower()} on stream {sid}, "
                                  "which the server already finished", frame)
        if frame.type == MessageType.RESPONSE:
            try:
                response = ttrpc_pb2.Response.FromString(frame.data)
            except DecodeError as err:
                raise self._violation(f"undecodable response envelope ({err})", frame) from err
            self._finish_remote(sid, stream)
            return ResponseReceived(sid, Status.from_proto(response.status), response.payload)
        if stream.unary:
            raise self._violation("data frame on a unary stream", frame)
        data = self._data_payload(frame)
        end = bool(frame.flags & _CLOSED)
        if end:
            self._finish_remote(sid, stream)
        return DataReceived(sid, data, end)

    def _finish_remote(self, sid: int, stream: _Stream) -> None:
        # The server's close ends the stream for both halves; if we were still sending, the
        # stream stays known (remote-closed) until we close or abandon it.
        stream.remote_closed = True
        if stream.local_closed:
            del self._streams[sid]


class ServerConnection(_Connection[ServerEvent]):
    """The side that accepts: receives requests and data, sends responses and data."""

    role = "server"

    def __init__(self, max_size: int = MAX_DATA_SIZE) -> None:
        super().__init__(max_size)
        self._last_stream_id = 0

    def send_response(self, stream_id: int, status: Status, payload: bytes = b"") -> bytes:
        """Finish a stream with a status (and, when OK, the response message)."""
        stream = self._stream(stream_id)
        if stream.local_closed:
            raise TtrpcError(f"ttrpc stream {stream_id} already answered", stream_id=stream_id)
        response = ttrpc_pb2.Response(status=status.to_proto(), payload=payload)
        out = self._encode(stream_id, MessageType.RESPONSE, Flags.NONE,
                           response.SerializeToString())
        self._finish_local(stream_id, stream)
        return out

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> bytes:
        stream = self._sendable(stream_id)
        out = self._encode(stream_id, MessageType.DATA, self._data_flags(end_stream), data)
        if end_stream:
            self._finish_local(stream_id, stream)
        return out

    def end_stream(self, stream_id: int) -> bytes:
        """Finish a streaming reply successfully (a closing data frame with no data)."""
        stream = self._sendable(stream_id)
        out = self._encode(stream_id, MessageType.DATA, _CLOSE, b"")
        self._finish_local(stream_id, stream)
        return out

    def _finish_local(self, stream_id: int, stream: _Stream) -> None:
        # A server's close finishes the stream; input still in flight is drained quietly.
        del self._streams[stream_id]
        if not stream.remote_closed:
            self._draining.add(stream_id)

    def _handle(self, frame: Frame) -> ServerEvent | None:
        self._check_frame(frame)
        sid = frame.stream_id
        if frame.type == MessageType.RESPONSE:
            raise self._violation("the client sent a response", frame)
        if frame.type == MessageType.REQUEST:
            return self._request(frame)
        if sid > self._last_stream_id:
            raise self._violation(f"data on stream {sid}, which was never opened", frame)
        if sid in self._draining:
            if frame.flags & _CLOSED:
                self._draining.discard(sid)
            return None
        stream = self._streams.get(sid)
        if stream is None:
            raise self._violation(f"data on stream {sid}, which is finished", frame)
        if stream.unary:
            raise self._violation("data frame on a unary stream", frame)
        if stream.remote_closed:
            raise self._violation(f"data on stream {sid} after the client closed it", frame)
        data = self._data_payload(frame)
        end = bool(frame.flags & _CLOSED)
        if end:
            stream.remote_closed = True
        return DataReceived(sid, data, end)

    def _request(self, frame: Frame) -> RequestReceived:
        sid = frame.stream_id
        if sid <= self._last_stream_id:
            raise self._violation(f"request reuses stream id {sid} (ids must increase; last "
                                  f"was {self._last_stream_id})", frame)
        if frame.flags & _CLOSED and frame.flags & _OPEN:
            raise self._violation("request flagged both remote-closed and remote-open", frame)
        try:
            request = ttrpc_pb2.Request.FromString(frame.data)
        except DecodeError as err:
            raise self._violation(f"undecodable request envelope ({err})", frame) from err
        self._last_stream_id = sid
        event = RequestReceived(
            sid, request.service, request.method, request.payload, request.timeout_nano,
            tuple((kv.key, kv.value) for kv in request.metadata), frame.flags)
        self._streams[sid] = _Stream(unary=event.unary, local_closed=False,
                                     remote_closed=not event.remote_open)
        return event
