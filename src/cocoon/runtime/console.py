"""Host terminals: the pty whose master goes to the engine's console socket, and raw mode.

The guest runs its own pty (it echoes, it handles line editing); the host pty in between must
pass bytes through untouched, so its slave side is put in raw mode.
"""

from __future__ import annotations

import array
import os
import socket
import termios

from cocoon.errors import ConfigError


def open_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    make_raw(slave)
    return master, slave


def make_raw(fd: int) -> None:
    """cfmakeraw(3) (Python 3.11's tty module has only setraw, which differs in detail)."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
               | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB)
    cflag |= termios.CS8
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])


def send_console(socket_path: str, master: int, name: str) -> None:
    """Hand the pty master to the engine, as runc does (the fd, the pty's name as message)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(socket_path)
            fds = array.array("i", [master])
            sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError as err:
        raise ConfigError(f"console socket {socket_path}: {err.strerror or err}",
                          path=socket_path) from err
