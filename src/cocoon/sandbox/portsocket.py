"""What the host ends of a stdio port share: the binding, the connection, the StreamEnd call.

`PortStream` (stdout, stderr) and `StdinPort` (stdin) each ask the agent for a port, connect to
its socket in the VM directory, prove themselves with the binding's token, and keep a StreamEnd
call waiting beside the copy; these are those steps, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from cocoon.errors import RPCError
from cocoon.sandbox.agentclient import StreamPort
from cocoon.ttrpc.status import StatusCode

# answers of an agent that has no stdio ports or cannot bind this stream: the ttrpc calls instead
NOT_BOUND = (StatusCode.UNIMPLEMENTED, StatusCode.FAILED_PRECONDITION, StatusCode.NOT_FOUND)


async def bound(binding: Awaitable[StreamPort | None]) -> StreamPort | None:
    """The port the agent bound, or None when the stream stays on the ttrpc calls."""
    try:
        return await binding
    except RPCError as err:
        if err.code in NOT_BOUND:
            return None
        raise


async def connect(path: Path, token: bytes, send_buffer: int = 0) -> socket.socket:
    """A non-blocking connection to a port's socket, the binding's token already written (the
    agent moves nothing before it has read it). The caller closes it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        if send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        await loop.sock_connect(sock, str(path))
        await loop.sock_sendall(sock, token)
    except BaseException:
        sock.close()
        raise
    return sock


async def forget(end: asyncio.Future[Any]) -> None:
    """Cancel a call or read no longer waited for (a StreamEnd, a port's recv), and take what
    it ended with: left pending, a read would fail on the socket closed next, unretrieved."""
    end.cancel()
    with contextlib.suppress(asyncio.CancelledError, RPCError, OSError):
        await end
