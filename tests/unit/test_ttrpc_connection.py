"""The sans-IO stream state machines, driven with plain bytes: what each side sends, what it
accepts, and which peer behaviour is a protocol violation."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon.errors import OversizedMessageError, ProtocolError, TtrpcError
from cocoon.ttrpc.connection import (
    ClientConnection,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
)
from cocoon.ttrpc.frame import MAX_DATA_SIZE, Flags, Frame, MessageType, encode_frame
from cocoon.ttrpc.status import Status, StatusCode

# Request{service "grpc.Health", method "Check", payload 08 01, timeout_nano 1e9,
# metadata [{k, v}]}, protobuf written out by hand, in a unary request frame on stream 1.
GOLDEN_REQUEST = bytes.fromhex(
    "00000026" "00000001" "01" "00"
    "0a0b" + b"grpc.Health".hex()
    + "1205" + b"Check".hex()
    + "1a020801"
    + "208094ebdc03"
    + "2a06" "0a016b" "120176")
# Response{status{code 5, message "gone"}} on stream 1.
GOLDEN_ERROR_RESPONSE = bytes.fromhex("0000000a" "00000001" "02" "00" "0a08" "0805" "1204"
                                      + b"gone".hex())
# Response{status{}, payload 08 01} on stream 1: OK is an empty (but present) status.
GOLDEN_OK_RESPONSE = bytes.fromhex("00000006" "00000001" "02" "00" "0a00" "12020801")


def frame(sid: int, type_: int, flags: int = 0, data: bytes = b"") -> bytes:
    return encode_frame(Frame(sid, type_, flags, data))


def server_events(conn: ServerConnection, data: bytes) -> list[RequestReceived | DataReceived]:
    conn.receive_data(data)
    return list(conn.events())


def client_events(conn: ClientConnection, data: bytes) -> list[ResponseReceived | DataReceived]:
    conn.receive_data(data)
    return list(conn.events())


def test_unary_call_golden_bytes_both_ways() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("grpc.Health", "Check", b"\x08\x01",
                                     timeout_nano=1_000_000_000, metadata=[("k", "v")])
    assert (sid, wire) == (1, GOLDEN_REQUEST)
    (request,) = server_events(server, wire)
    assert request == RequestReceived(1, "grpc.Health", "Check", b"\x08\x01", 1_000_000_000,
                                      (("k", "v"),), 0)
    assert request.unary and not request.remote_open
    assert server.send_response(1, Status(StatusCode.NOT_FOUND, "gone")) == GOLDEN_ERROR_RESPONSE
    (response,) = client_events(client, GOLDEN_ERROR_RESPONSE)
    assert response == ResponseReceived(1, Status(StatusCode.NOT_FOUND, "gone"), b"")
    assert client.open_streams == server.open_streams == frozenset()


def test_ok_response_golden_bytes() -> None:
    client, server = ClientConnection(), ServerConnection()
    _, wire = client.start_request("s", "m")
    server_events(server, wire)
    assert server.send_response(1, Status(), b"\x08\x01") == GOLDEN_OK_RESPONSE
    (response,) = client_events(client, GOLDEN_OK_RESPONSE)
    assert isinstance(response, ResponseReceived)
    assert response.status.ok and response.payload == b"\x08\x01"


def test_stream_ids_are_odd_and_increasing() -> None:
    client = ClientConnection()
    assert [client.start_request("s", "m")[0] for _ in range(4)] == [1, 3, 5, 7]


def test_client_streaming_call() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("s", "m", client_streaming=True)
    assert wire[8:10] == bytes([MessageType.REQUEST, Flags.REMOTE_OPEN])
    (request,) = server_events(server, wire)
    assert isinstance(request, RequestReceived)
    assert request.remote_open and not request.unary
    wire = client.send_data(sid, b"one") + client.send_data(sid, b"two")
    close = client.close_send(sid)
    assert close == bytes.fromhex("00000000" "00000001" "03" "05")
    assert server_events(server, wire + close) == [
        DataReceived(sid, b"one", False), DataReceived(sid, b"two", False),
        DataReceived(sid, None, True)]
    with pytest.raises(TtrpcError):
        client.send_data(sid, b"late")
    client_events(client, server.send_response(sid, Status(), b"r"))
    assert client.open_streams == server.open_streams == frozenset()


def test_server_streaming_call() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("s", "m", b"req", server_streaming=True)
    assert wire[9] == Flags.REMOTE_CLOSED
    server_events(server, wire)
    out = server.send_data(sid, b"a") + server.send_data(sid, b"") + server.end_stream(sid)
    assert client_events(client, out) == [
        DataReceived(sid, b"a", False), DataReceived(sid, b"", False),
        DataReceived(sid, None, True)]
    assert client.open_streams == server.open_streams == frozenset()


def test_last_data_frame_may_carry_data() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("s", "m", client_streaming=True, server_streaming=True)
    server_events(server, wire)
    assert server_events(server, client.send_data(sid, b"bye", end_stream=True)) == [
        DataReceived(sid, b"bye", True)]
    assert client_events(client, server.send_data(sid, b"end", end_stream=True)) == [
        DataReceived(sid, b"end", True)]
    assert client.open_streams == server.open_streams == frozenset()


def test_local_misuse_is_refused() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("s", "m")
    server_events(server, wire)
    with pytest.raises(TtrpcError):
        client.send_data(sid, b"x")  # unary
    with pytest.raises(TtrpcError):
        server.send_data(sid, b"x")  # unary
    server.send_response(sid, Status())
    with pytest.raises(TtrpcError):
        server.send_response(sid, Status())  # answered already
    with pytest.raises(OversizedMessageError):
        client.start_request("s", "m", b"\0" * MAX_DATA_SIZE)
    assert client.start_request("s", "m")[0] == 3  # the refused request used no id


def test_abandoned_stream_drops_late_frames_then_forgets_it() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("s", "m", client_streaming=True)
    server_events(server, wire)
    close = client.abandon(sid)
    assert close == frame(sid, MessageType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA)
    assert client.abandon(sid) == b""  # idempotent
    assert server_events(server, close) == [DataReceived(sid, None, True)]
    assert client_events(client, server.send_response(sid, Status(StatusCode.CANCELLED))) == []
    with pytest.raises(ProtocolError, match="already finished"):
        client_events(client, frame(sid, MessageType.RESPONSE))


def test_server_finishing_early_drains_client_data_in_flight() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, wire = client.start_request("s", "m", client_streaming=True)
    server_events(server, wire)
    answer = server.send_response(sid, Status(StatusCode.INVALID_ARGUMENT, "no"))
    in_flight = client.send_data(sid, b"x")
    assert server_events(server, in_flight) == []
    (response,) = client_events(client, answer)
    assert isinstance(response, ResponseReceived)
    assert response.status.code == StatusCode.INVALID_ARGUMENT
    with pytest.raises(TtrpcError):
        client.send_data(sid, b"y")  # the server finished the stream
    assert server_events(server, client.close_send(sid)) == []
    assert client.open_streams == server.open_streams == frozenset()
    with pytest.raises(ProtocolError, match="finished"):
        server_events(server, frame(sid, MessageType.DATA))


def _server_after(*preamble: bytes) -> ServerConnection:
    server = ServerConnection()
    for data in preamble:
        server_events(server, data)
    return server


UNARY_1 = ClientConnection().start_request("s", "m")[1]
STREAMING_1 = ClientConnection().start_request("s", "m", client_streaming=True)[1]


@pytest.mark.parametrize(("preamble", "bad", "reason"), [
    ((), frame(2, MessageType.REQUEST, 0, b""), "even stream id"),
    ((), frame(0, MessageType.REQUEST, 0, b""), "stream id 0"),
    ((), frame(1, 0x04, 0, b""), "unknown message type"),
    ((), frame(1, 0x00, 0, b""), "unknown message type"),
    ((UNARY_1,), UNARY_1, "reuses stream id"),
    ((), frame(1, MessageType.RESPONSE), "client sent a response"),
    ((), frame(3, MessageType.DATA, 0, b"x"), "never opened"),
    ((UNARY_1,), frame(1, MessageType.DATA, 0, b"x"), "unary stream"),
    ((), frame(1, MessageType.REQUEST, Flags.REMOTE_OPEN | Flags.REMOTE_CLOSED),
     "both remote-closed and remote-open"),
    ((), frame(1, MessageType.REQUEST, 0, b"\xff\xff\xff"), "undecodable request"),
    ((), frame(1, MessageType.REQUEST, 0, b"\x0a\x01\xff"), "undecodable request"),  # UTF-8
    ((STREAMING_1,), frame(1, MessageType.DATA, Flags.NO_DATA, b"x"), "no-data carries bytes"),
    ((STREAMING_1, frame(1, MessageType.DATA, Flags.REMOTE_CLOSED)),
     frame(1, MessageType.DATA, 0, b"x"), "after the client closed"),
    ((), bytes.fromhex("00500000" "00000001" "01" "00"), "exceeds"),
])
def test_server_refuses_protocol_violations(preamble: tuple[bytes, ...], bad: bytes,
                                            reason: str) -> None:
    server = _server_after(*preamble)
    with pytest.raises(ProtocolError, match=reason):
        server_events(server, bad)
    assert server.failed is not None
    with pytest.raises(ProtocolError):  # spent
        server_events(server, UNARY_1)


def _unary_client() -> ClientConnection:
    client = ClientConnection()
    client.start_request("s", "m")
    return client


@pytest.mark.parametrize(("bad", "reason"), [
    (frame(3, MessageType.RESPONSE), "never opened"),
    (frame(2, MessageType.RESPONSE), "even stream id"),
    (frame(1, MessageType.REQUEST), "server sent a request"),
    (frame(1, MessageType.DATA, 0, b"x"), "unary stream"),
    (frame(1, MessageType.RESPONSE, 0, b"\x0a\xff"), "undecodable"),
    (frame(1, 9), "unknown message type"),
])
def test_client_refuses_protocol_violations(bad: bytes, reason: str) -> None:
    client = _unary_client()
    with pytest.raises(ProtocolError, match=reason):
        client_events(client, bad)


def test_response_on_a_finished_stream_is_a_violation() -> None:
    client = _unary_client()
    ok = frame(1, MessageType.RESPONSE)
    assert len(client_events(client, ok)) == 1
    with pytest.raises(ProtocolError, match="already finished"):
        client_events(client, ok)


def test_events_before_a_violation_are_delivered() -> None:
    server = ServerConnection()
    server.receive_data(UNARY_1 + frame(2, MessageType.REQUEST))
    events = server.events()
    assert isinstance(next(events), RequestReceived)
    with pytest.raises(ProtocolError, match="even"):
        next(events)


def test_events_before_an_oversized_header_are_delivered() -> None:
    server = ServerConnection()
    server.receive_data(UNARY_1 + bytes.fromhex("7fffffff00000003010a"))
    events = server.events()
    assert isinstance(next(events), RequestReceived)
    with pytest.raises(OversizedMessageError):
        next(events)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), prefix=st.sampled_from([b"", UNARY_1, STREAMING_1]))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, prefix: bytes) -> None:
    for conn in (ServerConnection(), ClientConnection()):
        conn.receive_data(prefix + data)
        with contextlib.suppress(ProtocolError):
            list(conn.events())
