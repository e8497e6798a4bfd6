"""Frame encoding and decoding against bytes written out by hand from containerd/ttrpc's
PROTOCOL.md (10-byte header: u32 BE length, u32 BE stream id, u8 type, u8 flags)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon.errors import OversizedMessageError, ProtocolError
from cocoon.ttrpc.frame import (
    HEADER_SIZE,
    MAX_DATA_SIZE,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    encode_frame,
    encode_header,
)

# (frame, bytes on the wire), one per frame type and flag the protocol defines.
GOLDEN = [
    # unary request on stream 1, 3 bytes of data, no flags
    (Frame(1, MessageType.REQUEST, 0, b"abc"),
     bytes([0, 0, 0, 3, 0, 0, 0, 1, 0x01, 0x00]) + b"abc"),
    # request on stream 3 flagged remote-open (client will stream)
    (Frame(3, MessageType.REQUEST, Flags.REMOTE_OPEN, b"r"),
     bytes([0, 0, 0, 1, 0, 0, 0, 3, 0x01, 0x02]) + b"r"),
    # request on stream 5 flagged remote-closed (only the server streams)
    (Frame(5, MessageType.REQUEST, Flags.REMOTE_CLOSED, b""),
     bytes([0, 0, 0, 0, 0, 0, 0, 5, 0x01, 0x01])),
    # response on stream 1
    (Frame(1, MessageType.RESPONSE, 0, b"\x0a\x00"),
     bytes([0, 0, 0, 2, 0, 0, 0, 1, 0x02, 0x00, 0x0a, 0x00])),
    # data on stream 7
    (Frame(7, MessageType.DATA, 0, b"xyz!"),
     bytes([0, 0, 0, 4, 0, 0, 0, 7, 0x03, 0x00]) + b"xyz!"),
    # last data frame, carrying data, flagged remote-closed
    (Frame(7, MessageType.DATA, Flags.REMOTE_CLOSED, b"z"),
     bytes([0, 0, 0, 1, 0, 0, 0, 7, 0x03, 0x01]) + b"z"),
    # closing data frame without data: remote-closed | no-data
    (Frame(9, MessageType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""),
     bytes([0, 0, 0, 0, 0, 0, 0, 9, 0x03, 0x05])),
    # the largest stream id, a 300-byte payload: length 0x0000012c
    (Frame(0xFFFFFFFF, MessageType.DATA, 0, b"\x55" * 300),
     bytes([0, 0, 0x01, 0x2C, 0xFF, 0xFF, 0xFF, 0xFF, 0x03, 0x00]) + b"\x55" * 300),
]


@pytest.mark.parametrize(("frame", "wire"), GOLDEN)
def test_golden_encode(frame: Frame, wire: bytes) -> None:
    assert encode_frame(frame) == wire


@pytest.mark.parametrize(("frame", "wire"), GOLDEN)
def test_golden_decode(frame: Frame, wire: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(wire)
    assert list(decoder) == [frame]
    assert decoder.buffered == 0


def test_constants_match_the_protocol() -> None:
    assert HEADER_SIZE == 10
    assert MAX_DATA_SIZE == 4 * 1024 * 1024
    assert (MessageType.REQUEST, MessageType.RESPONSE, MessageType.DATA) == (1, 2, 3)
    assert (Flags.REMOTE_CLOSED, Flags.REMOTE_OPEN, Flags.NO_DATA) == (1, 2, 4)


def test_every_frame_in_one_buffer_and_byte_by_byte() -> None:
    wire = b"".join(w for _, w in GOLDEN)
    frames = [f for f, _ in GOLDEN]
    whole = FrameDecoder()
    whole.feed(wire)
    assert list(whole) == frames
    trickle = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(wire)):
        trickle.feed(wire[i:i + 1])
        got.extend(trickle)
        assert trickle.buffered <= 300
    assert got == frames


def test_oversized_length_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    header = encode_header(MAX_DATA_SIZE + 1, 1, MessageType.REQUEST, 0)
    with pytest.raises(OversizedMessageError) as info:
        decoder.feed(header + b"\0" * 1000)
    assert info.value.length == MAX_DATA_SIZE + 1
    assert decoder.buffered == 0  # not one byte of the payload was kept
    with pytest.raises(ProtocolError):  # the decoder is spent
        decoder.feed(GOLDEN[0][1])


def test_oversized_rejected_when_header_arrives_in_pieces() -> None:
    decoder = FrameDecoder()
    header = encode_header(0xFFFFFFFF, 1, MessageType.DATA, 0)
    decoder.feed(header[:9])
    with pytest.raises(OversizedMessageError):
        decoder.feed(header[9:])
    assert decoder.buffered == 0


def test_frames_before_a_bad_header_are_kept() -> None:
    decoder = FrameDecoder()
    with pytest.raises(OversizedMessageError):
        decoder.feed(GOLDEN[0][1] + encode_header(MAX_DATA_SIZE + 1, 3, 1, 0))
    assert list(decoder) == [GOLDEN[0][0]]


def test_largest_message_accepted_and_buffer_bounded() -> None:
    payload = bytes(range(256)) * (MAX_DATA_SIZE // 256)
    wire = encode_frame(Frame(1, MessageType.DATA, 0, payload))
    decoder = FrameDecoder()
    for start in range(0, len(wire), 65536):
        decoder.feed(wire[start:start + 65536])
        assert decoder.buffered <= MAX_DATA_SIZE
    (frame,) = list(decoder)
    assert frame.data == payload


def test_encoder_refuses_oversized_and_out_of_range() -> None:
    with pytest.raises(OversizedMessageError):
        encode_frame(Frame(1, MessageType.DATA, 0, b"\0" * (MAX_DATA_SIZE + 1)))
    with pytest.raises(OversizedMessageError):
        encode_frame(Frame(1, MessageType.DATA, 0, b"12345"), max_size=4)
    with pytest.raises(ValueError):
        encode_header(0, 1 << 32, 1, 0)
    with pytest.raises(ValueError):
        encode_header(0, 1, 256, 0)


def test_unknown_type_passes_the_frame_layer() -> None:
    # Judging types is the connection's job; the proxy must be able to carry any frame.
    decoder = FrameDecoder()
    decoder.feed(bytes([0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 0xFF]))
    assert list(decoder) == [Frame(1, 0x7F, 0xFF, b"")]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    try:
        for chunk in _chunks(data, cuts):
            decoder.feed(chunk)
            assert decoder.buffered <= MAX_DATA_SIZE + HEADER_SIZE
            list(decoder)
    except ProtocolError:
        assert decoder.buffered <= MAX_DATA_SIZE + HEADER_SIZE


_frames = st.builds(Frame, st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.integers(0, 255),
                    st.binary(max_size=80))


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(_frames, max_size=8), tail=st.binary(max_size=40),
       cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_near_valid_streams_with_a_small_cap(frames: list[Frame], tail: bytes,
                                             cuts: list[int]) -> None:
    """Well-formed frames (some over a 64-byte cap) then garbage, in any chunking: frames come
    out intact up to the first oversized one, which raises, and the buffer stays within the cap."""
    cap = 64
    wire = b"".join(encode_frame(f, max_size=1 << 20) for f in frames) + tail
    decoder = FrameDecoder(max_size=cap)
    got: list[Frame] = []
    try:
        for chunk in _chunks(wire, cuts):
            decoder.feed(chunk)
            assert decoder.buffered <= cap + HEADER_SIZE
            got.extend(decoder)
    except ProtocolError:
        got.extend(decoder)
        assert decoder.buffered <= cap + HEADER_SIZE
    valid = []
    for frame in frames:
        if len(frame.data) > cap:
            break
        valid.append(frame)
    assert got[:len(valid)] == valid
