"""The host end of the debug console: the caller's terminal joined to the guest's shell.

The guest's side is `cocoon.agent.debugconsole`; between the two is a virtio-serial port whose
host end is a unix socket QEMU listens on in the VM's directory. Every session is recorded in
the sandbox directory's `debug-console.log` (who, when, how it ended, bytes each way), and
logged as a warning: the console reaches outside the containers of the sandbox.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import select
import socket
import termios
import tty
from pathlib import Path

from cocoon.errors import SandboxError
from cocoon.linux.consolewire import END
from cocoon.sandbox.layout import DEBUG_CONSOLE, Layout, SandboxConfig

logger = logging.getLogger("cocoon.sandbox.debugconsole")

DETACH = b"\x1d"  # Ctrl-] on a terminal, as telnet and virsh console
EOF = b"\x04"  # the terminal's end-of-file character
CHUNK = 64 << 10


def socket_path(layout: Layout) -> Path:
    return layout.debug_socket


def log_path(layout: Layout) -> Path:
    return layout.root / "debug-console.log"


def enabled(layout: Layout) -> bool:
    try:
        return bool(SandboxConfig.load(layout.config).extra.get(DEBUG_CONSOLE))
    except (OSError, ValueError, TypeError):
        return False


def record(layout: Layout, event: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    line = f"{stamp} uid={os.getuid()} pid={os.getpid()} {event}\n"
    with contextlib.suppress(OSError), open(log_path(layout), "a") as log:
        log.write(line)
    logger.warning("debug console of %s: %s", layout.root.name, event)


def attach(layout: Layout, sandbox_id: str, stdin: int = 0, stdout: int = 1) -> str:
    """Join `stdin`/`stdout` to the guest's shell until it exits, the caller types Ctrl-], or
    the sandbox goes away; how the session ended."""
    if not enabled(layout):
        raise SandboxError(f"sandbox {sandbox_id}: the debug console is off (enable it in the "
                           "configuration before the sandbox starts)")
    path = socket_path(layout)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.connect(str(path))
    except OSError as err:
        conn.close()
        raise SandboxError(f"sandbox {sandbox_id}: cannot reach its debug console at {path}: "
                           f"{err.strerror}") from err
    record(layout, "session opened")
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)
    sent = received = 0
    ending = "sandbox gone"
    tail = b""
    watched: list[int] = [conn.fileno(), stdin]
    try:
        with conn:
            while True:
                readable, _, _ = select.select(watched, [], [])
                if stdin in readable:
                    data = os.read(stdin, CHUNK)
                    if not data:
                        # input ended (a pipe): the terminal's end of file ends the shell,
                        # whose last output is still read
                        conn.sendall(EOF)
                        watched = [conn.fileno()]
                    elif DETACH in data and saved is not None:
                        data = data.split(DETACH, 1)[0]
                        if data:
                            conn.sendall(data)
                        ending = "detached"
                        break
                    else:
                        conn.sendall(data)
                        sent += len(data)
                if conn.fileno() in readable:
                    data = conn.recv(CHUNK)
                    if not data:
                        break
                    received += len(data)
                    data = tail + data
                    if END in data:
                        os.write(stdout, data.split(END, 1)[0])
                        ending = "shell exited"
                        break
                    # keep what could be the start of END for the next read
                    keep = next((n for n in range(min(len(END) - 1, len(data)), 0, -1)
                                 if END.startswith(data[-n:])), 0)
                    tail = data[len(data) - keep:] if keep else b""
                    os.write(stdout, data[:len(data) - keep])
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        record(layout, f"session closed ({ending}; {sent} bytes in, {received} bytes out)")
    return ending
