"""Drive an interactive command through a real pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


class PtySession:
    """A command whose stdin, stdout and stderr are the slave side of a fresh pty."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 rows: int = 24, cols: int = 80) -> None:
        self.master, slave = pty.openpty()
        self.resize(rows, cols)
        self.proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True, close_fds=True,
                                     preexec_fn=_controlling_tty)
        os.close(slave)
        self.output = b""

    def resize(self, rows: int, cols: int) -> None:
        import fcntl

        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, needle: str, timeout: float = 60.0) -> str:
        """Read until `needle` appears in the output; return everything read so far."""
        deadline = time.monotonic() + timeout
        wanted = needle.encode()
        while wanted not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{needle!r} not seen; output so far: {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    if self.proc.poll() is not None:
                        raise TimeoutError(f"{needle!r} not seen before exit; output: "
                                           f"{self.output[-2000:]!r}")
                    continue
                self.output += chunk
        return self.output.decode(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the command did not exit")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    self.output += os.read(self.master, 65536)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def _controlling_tty() -> None:
    import fcntl

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
