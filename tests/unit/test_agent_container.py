"""The agent's side of a forked child: its sync messages and the terminal it sends back."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios
import threading

import pytest

from cocoon.agent.container import ContainerError, _Streams, _SyncReader


async def _messages(chunks: list[bytes]) -> list[object]:
    read_fd, write_fd = os.pipe()
    reader = _SyncReader(read_fd)

    def write() -> None:  # in a thread: a pipe holds less than the largest message
        for chunk in chunks:
            os.write(write_fd, chunk)
        os.close(write_fd)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    found: list[object] = []
    try:
        while (message := await reader.next()) is not None:
            found.append(message)
    finally:
        reader.close()  # a writer still blocked gets EPIPE and ends
        await asyncio.to_thread(writer.join, 5)
    return found


def test_sync_lines_are_parsed_across_partial_writes() -> None:
    assert asyncio.run(_messages([b'{"pid": 4', b'2}\n{"ready"', b": true}\n"])) == [
        {"pid": 42}, {"ready": True}]


def test_an_oversized_sync_message_is_refused() -> None:
    with pytest.raises(ContainerError, match="oversized"):
        asyncio.run(_messages([b"x" * (128 * 1024)]))


async def _console() -> tuple[tuple[int, int], bytes, bool]:
    streams = _Streams(terminal=True)
    assert streams.child.console is not None
    process = streams.process("c1", "")
    # what the child does once it is inside the container: open a pty and send the master
    master, slave = os.openpty()
    with socket.socket(fileno=streams.child.console) as channel:
        socket.send_fds(channel, [b"pty"], [master])
    streams.child_fds = []  # the child's end was closed with its socket just above
    os.close(master)
    streams.receive_console(process, (24, 132))
    streams.close_all()
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    assert process.stdout is not None
    os.write(slave, b"hi")
    data = await asyncio.wait_for(process.stdout.read(10), 5)
    os.close(slave)
    process.close()
    return (rows, cols), data, process.terminal


def test_the_terminal_comes_back_over_the_console_socket() -> None:
    size, data, terminal = asyncio.run(_console())
    assert size == (24, 132)
    assert data == b"hi"
    assert terminal


async def _no_console() -> None:
    streams = _Streams(terminal=True)
    process = streams.process("c1", "")
    try:
        streams.receive_console(process, None)
    finally:
        streams.close_all()


def test_a_child_that_sent_no_terminal_is_an_error() -> None:
    with pytest.raises(ContainerError, match="no terminal"):
        asyncio.run(_no_console())
