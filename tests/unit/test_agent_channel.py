"""The agent port's session split: where a new host client's bytes begin in the stream.

The port cannot see a host reconnect that the guest kernel folded away; it sees a request whose
stream id does not increase. These tests feed the port's byte handler as the port's reader
would (in chunks cut anywhere, headers included) and read what each session got. The real port
is exercised in tests/vm/test_agent_channel.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cocoon.agent.channel import Port, Session, find_port
from cocoon.ttrpc.frame import Frame, MessageType, encode_frame


def request(stream_id: int, payload: bytes = b"call") -> bytes:
    return encode_frame(Frame(stream_id, MessageType.REQUEST, 0, payload))


def data(stream_id: int, payload: bytes) -> bytes:
    return encode_frame(Frame(stream_id, MessageType.DATA, 0, payload))


def drive(stream: bytes, chunk: int) -> list[tuple[bytes, bool]]:
    """Feed `stream` in `chunk`-byte pieces; each session's bytes and whether it was ended."""

    async def scenario() -> list[tuple[bytes, bool]]:
        port = Port(Path("/nonexistent"))
        port._begin()
        for start in range(0, len(stream), chunk):
            port._received(stream[start:start + chunk])
        sessions: list[Session] = []
        while not port._queue.empty():
            item = port._queue.get_nowait()
            assert item is not None
            sessions.append(item)
        out = []
        for session in sessions:
            if not session.ended:
                session.reader.feed_eof()
            out.append((await session.reader.read(), session.ended))
        return out

    return asyncio.run(scenario())


def test_one_client_is_one_session_however_the_bytes_are_cut() -> None:
    stream = request(1) + data(1, b"x" * 100) + request(3) + request(5, b"")
    for chunk in (1, 3, 10, 11, 64, len(stream)):
        assert drive(stream, chunk) == [(stream, False)]


def test_a_request_reusing_a_stream_id_starts_a_new_session() -> None:
    old = request(1) + request(3) + data(3, b"tail")
    new = request(1, b"hello") + request(3)
    for chunk in (1, 7, 10, 16, len(old + new)):
        assert drive(old + new, chunk) == [(old, True), (new, False)]


def test_every_restart_is_a_new_session() -> None:
    first, second, third = request(1) + request(3), request(1), request(1) + request(5)
    assert drive(first + second + third, 5) == [(first, True), (second, True), (third, False)]


def test_a_lower_but_not_first_stream_id_is_also_a_new_client() -> None:
    old, new = request(1) + request(9), request(3)
    assert drive(old + new, 4) == [(old, True), (new, False)]


def test_garbage_is_passed_on_untouched_for_the_server_to_refuse() -> None:
    garbage = b"GARBAGE!" * 64 + request(1)  # announces a 1.2 GB frame: nothing is parsed after
    assert drive(request(1) + garbage, 9) == [(request(1) + garbage, False)]


def test_find_port_reads_names_under_sysfs(tmp_path: Path) -> None:
    for port, name in (("vport0p1", "other"), ("vport0p2", "cocoon.agent")):
        (tmp_path / port).mkdir()
        (tmp_path / port / "name").write_text(f"{name}\n")
    assert find_port(ports_dir=tmp_path, timeout=0) == Path("/dev/vport0p2")
