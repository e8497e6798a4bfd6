"""The agent's ends of a container's stdio: bounded output buffers and a stdin that waits."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from cocoon.agent.stdio import InputStream, OutputStream

PAYLOAD = bytes(range(256)) * 400  # 100 kB: far more than the buffer under test holds


async def _bounded() -> tuple[int, bool, bytes]:
    read_fd, write_fd = os.pipe()
    stream = OutputStream(read_fd, limit=1000)

    def write_all() -> None:
        os.write(write_fd, PAYLOAD)  # blocks while the pipe is full
        os.close(write_fd)

    writer = threading.Thread(target=write_all)
    writer.start()
    await asyncio.sleep(0.3)  # the agent reads until its buffer is full, then stops
    held, blocked = len(stream._buffer), writer.is_alive()
    received = bytearray()
    while chunk := await stream.read(300):
        received += chunk
    await asyncio.to_thread(writer.join, 10)
    return held, blocked, bytes(received)


def test_output_is_held_to_the_limit_and_arrives_in_order() -> None:
    held, blocked, received = asyncio.run(_bounded())
    assert 0 < held <= 1000
    assert blocked  # the full pipe pushed back on the writer (the container)
    assert received == PAYLOAD


async def _eof_at_once() -> bytes:
    read_fd, write_fd = os.pipe()
    stream = OutputStream(read_fd)
    os.write(write_fd, b"last words")
    os.close(write_fd)
    first = await stream.read(100)
    assert await stream.read(100) == b""
    await stream.drained(1.0)
    return first


def test_end_of_stream_is_an_empty_read() -> None:
    assert asyncio.run(_eof_at_once()) == b"last words"


async def _detached() -> tuple[int | None, bytes, bytes, list[str], bool]:
    read_fd, write_fd = os.pipe()
    stream = OutputStream(read_fd)
    os.write(write_fd, b"buffered")
    await asyncio.sleep(0.1)  # the agent reads it into its buffer
    closed: list[str] = []
    fd, pending = stream.detach(lambda: closed.append("closed"))
    os.write(write_fd, b"after")  # the new owner's, not the buffer's
    await asyncio.sleep(0.1)
    after = await stream.read(100)
    stream.close()
    assert fd is not None
    left = os.read(fd, 100)
    still_open = os.fstat(fd) is not None  # close() left the detached descriptor alone
    os.close(fd)
    os.close(write_fd)
    return read_fd if fd == read_fd else None, pending, after + left, closed, still_open


def test_a_detached_stream_hands_over_its_descriptor_and_buffer() -> None:
    fd, pending, rest, closed, still_open = asyncio.run(_detached())
    assert fd is not None
    assert pending == b"buffered"
    assert rest == b"after"  # read() gave nothing more; the descriptor held the rest
    assert closed == ["closed"] and still_open


async def _stdin_roundtrip() -> tuple[int, bytes]:
    read_fd, write_fd = os.pipe()
    stream = InputStream(write_fd)
    data = os.urandom(1 << 20)  # more than a pipe holds: the write must wait for room
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    written = await stream.write(data)
    stream.close()
    await asyncio.to_thread(reader.join, 10)
    os.close(read_fd)
    assert bytes(received) == data
    with pytest.raises(BrokenPipeError):
        await stream.write(b"more")
    return written, bytes(received[:4])


def test_stdin_writes_everything_then_closes() -> None:
    written, _ = asyncio.run(_stdin_roundtrip())
    assert written == 1 << 20


def test_a_detached_stdin_hands_over_after_the_writes_asked_before() -> None:
    """`detach` waits for the writes already asked for, then gives the descriptor away: later
    writes fail as on a closed stdin, and `close()` tells the new owner instead."""

    async def scenario() -> tuple[bytes, list[str], bool]:
        read_fd, write_fd = os.pipe()
        stream = InputStream(write_fd)
        big = PAYLOAD * 2  # more than the pipe holds: the write waits for the reader
        writing = asyncio.create_task(stream.write(big))
        await asyncio.sleep(0)
        closed: list[str] = []
        detaching = asyncio.create_task(stream.detach(lambda: closed.append("told")))
        await asyncio.sleep(0.1)
        pending = detaching.done()
        received = bytearray()
        while len(received) < len(big):
            received += await asyncio.to_thread(os.read, read_fd, 1 << 16)
        await writing
        handed = await detaching
        assert handed == write_fd
        with pytest.raises(BrokenPipeError):
            await stream.write(b"late")
        stream.close()
        os.close(handed)
        os.close(read_fd)
        return bytes(received), closed, pending

    received, closed, pending = asyncio.run(scenario())
    assert not pending, "detached while a write was still on its way"
    assert received == PAYLOAD * 2
    assert closed == ["told"]
