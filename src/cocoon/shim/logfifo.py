"""The shim's log, written to the `log` fifo that containerd reads in the bundle directory.

containerd copies whatever arrives there into its own log. The reader comes and goes (containerd
restarts, or has not opened it yet), so writes never block and never fail the shim: a record
that finds no reader is dropped, and the fifo is reopened when a reader may be back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

REOPEN_INTERVAL = 1.0


class FifoHandler(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None
        self._last_try = 0.0

    def _open(self) -> int | None:
        now = time.monotonic()
        if self._fd is None and now - self._last_try >= REOPEN_INTERVAL:
            self._last_try = now
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                self._fd = None  # no reader yet (ENXIO) or no fifo: try again later
        return self._fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode(errors="replace")
        except Exception:
            self.handleError(record)
            return
        fd = self._open()
        if fd is None:
            return
        try:
            os.write(fd, data)
        except OSError as err:
            if err.errno in (errno.EPIPE, errno.EBADF):
                self._drop()
            # EAGAIN: the reader is slow; losing a log line beats stalling the shim

    def _drop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None

    def close(self) -> None:
        self._drop()
        super().close()
