"""Waiting on a stdio port's descriptor: for its host, its data or room, and its token.

A virtio-serial port reports POLLHUP while no host is connected; epoll would report that
without pause, so a hang-up is polled for (every `HOST_POLL`) while data and room are waited for
with the event loop.
"""

from __future__ import annotations

import asyncio
import os
import select

TOKEN_SIZE = 16
HOST_POLL = 0.02  # seconds between looks for a host (POLLHUP cannot be waited for)


def events(fd: int) -> int:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLOUT)
    return sum(ev for _, ev in poller.poll(0))


async def ready(fd: int, write: bool) -> None:
    """Wait until the loop reports `fd` readable (or writable); a hang-up wakes it too."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await woken
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def await_token(port_fd: int, token: bytes) -> None:
    """Until a connected host has written `token`; exactly its bytes are read, nothing more
    (what a stdin binding's host sends after it belongs to the process)."""
    got = b""
    while True:
        seen = events(port_fd)
        if seen & select.POLLHUP:
            got = b""  # a host that hung up mid-token proves nothing
            await asyncio.sleep(HOST_POLL)
            continue
        if not seen & select.POLLIN:
            await ready(port_fd, write=False)
            continue
        try:
            got += os.read(port_fd, TOKEN_SIZE - len(got))
        except BlockingIOError:
            continue
        if len(got) < TOKEN_SIZE:
            continue
        if got == token:
            return
        got = b""  # a token of an earlier binding of this port: its host gets nothing
