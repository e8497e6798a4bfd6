"""The wire between a per-process shim and its sandbox monitor (standard library only).

The shim stands in on the host for one guest process; the monitor relays that process's stdio
(it already holds the agent channel). On the monitor's shim socket (`shim.sock` in the sandbox
directory, mode 0600), a shim sends newline-terminated JSON objects:

    {"attach": {"container_id": C, "exec_id": E, "terminal": T}}   with SCM_RIGHTS: its stdio
        (stdin, stdout, stderr; or the one terminal), exactly once, first
    {"signal": N}    a signal the shim received, for the guest process
    {"resize": true} the shim's terminal changed size

and the monitor answers once, when the process has exited and its output is all written:

    {"exit": S}      the exit status in the shell's form (128 + n for a signal)

then closes the connection. A shim whose connection ends without an answer exits as if the
process had been killed (137). Lines are at most MAX_LINE bytes; anything else ends the
connection.
"""

from __future__ import annotations

import array
import json
import socket

TYPE_CHECKING = False  # mypy takes it as true; the shim imports this module, and typing costs
if TYPE_CHECKING:
    from typing import Any

MAX_LINE = 4096
MAX_FDS = 3
LOST_STATUS = 137
ATTACHED = b"attached\n"  # on the shim's report pipe, once its attach is sent
FAILED = b"failed: "  # on the report pipe instead, before a one-line reason
REPORT_MAX = 512  # bytes of a report the spawner reads


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ValueError(f"shim message of {len(data)} bytes")
    return data


def decode(line: bytes) -> dict[str, Any]:
    """One message; ValueError for anything that is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"not a shim message: {line[:100]!r}")
    return message


def send_with_fds(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    data = encode(message)
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  array.array("i", fds).tobytes())])
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_with_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Bytes (up to MAX_LINE) and any descriptors that came with them."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(MAX_LINE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)
