"""The stdio containerd hands a process: fifo paths (or file:// URIs) opened for the relay.

Output fifos are opened read-write, as containerd's runc shim keeps a reader of its own: the
open never blocks on an absent reader, and while the real reader is away (containerd restarting,
CRI reopening a container's log) output waits in the pipe instead of failing with EPIPE. Our
descriptor is the only writer, so closing it is the reader's end of file. Stdin is opened
non-blocking for reading: epoll does not report a fifo whose writer never came as closed, so the
relay simply waits for one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

from cocoon.errors import ConfigError
from cocoon.sandbox.relay import Stdio


@dataclass(frozen=True)
class StdioPaths:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass
class OpenStdio:
    """Descriptors for one process; `close()` is idempotent."""

    paths: StdioPaths
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    _closed: bool = field(default=False, repr=False)

    def relay_stdio(self) -> Stdio:
        """What ProcessRelay relays: the output (stdin has its own pump, see shim.stdin)."""
        return Stdio(stdin=None, stdout=self.stdout,
                     stderr=None if self.paths.terminal else self.stderr,
                     terminal=self.paths.terminal, tty_fd=None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in {self.stdin, self.stdout, self.stderr} - {None}:
            assert fd is not None
            with contextlib.suppress(OSError):
                os.close(fd)


def _output_path(uri: str) -> tuple[str, bool]:
    """(path, is_file) for an output location; binary:// loggers are not supported."""
    if "://" not in uri:
        return uri, False
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return parsed.path, True
    if parsed.scheme == "fifo":
        return parsed.path, False
    raise ConfigError(f"stdio {uri!r}: the {parsed.scheme}:// scheme is not supported "
                      "(use a fifo or file:// path)", uri=uri)


def _open_output(uri: str) -> int:
    path, is_file = _output_path(uri)
    try:
        if is_file:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"cannot open {path} for the process's output: {err.strerror}",
                          path=path) from err


def open_stdio(paths: StdioPaths) -> OpenStdio:
    """Open every given path; on failure nothing stays open."""
    opened = OpenStdio(paths)
    try:
        if paths.stdin:
            try:
                opened.stdin = os.open(paths.stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:
                raise ConfigError(f"cannot open {paths.stdin} for the process's stdin: "
                                  f"{err.strerror}", path=paths.stdin) from err
        if paths.stdout:
            opened.stdout = _open_output(paths.stdout)
        if paths.stderr and not paths.terminal:
            if paths.stderr == paths.stdout and opened.stdout is not None:
                opened.stderr = opened.stdout
            else:
                opened.stderr = _open_output(paths.stderr)
    except BaseException:
        opened.close()
        raise
    return opened
