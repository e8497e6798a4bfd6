"""Starting the per-process shim: the host process an engine waits on for one guest process.

`spawn()` forks it off the calling CLI; the child takes the terminal it is given (if any) and
execs the shim's own small program (`cocoon.runtime.shimproc`), so it keeps none of the CLI's
memory. The CLI then exits and the shim is adopted by the engine's subreaper (conmon,
containerd-shim-runc-v2), which waits for it and takes its exit status as the container's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

from cocoon.runtime.shimwire import LOST_STATUS

__all__ = ["LOST_STATUS", "ShimSpec", "spawn"]


@dataclass(frozen=True)
class ShimSpec:
    shim_socket: Path              # the sandbox monitor's socket for shims
    container_id: str
    exec_id: str = ""
    console: int | None = None     # a host pty slave to use as stdio and controlling tty
    netns: str | None = None       # "new", a path to join, or None for the caller's
    log_path: Path | None = None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-I", "-m", "cocoon.runtime.shimproc",
                "--socket", str(self.shim_socket), "--container", self.container_id]
        if self.exec_id:
            argv += ["--exec", self.exec_id]
        if self.console is not None:
            argv.append("--terminal")
        if self.netns is not None:
            argv += ["--netns", self.netns]
        if self.log_path is not None:
            argv += ["--log", str(self.log_path)]
        return argv


def _take_console(slave: int) -> None:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)


def spawn(spec: ShimSpec) -> int:
    """Fork the shim; return its pid. The caller must not wait for it."""
    argv = spec.argv()
    pid = os.fork()
    if pid:
        return pid
    try:
        if spec.console is not None:
            _take_console(spec.console)
        os.closerange(3, 65536)
        os.execv(argv[0], argv)
    except BaseException:  # the child must never return into the caller's code
        with contextlib.suppress(Exception):
            os.write(2, f"cocoon: cannot start the shim for {spec.container_id}\n".encode())
    finally:
        os._exit(LOST_STATUS)
