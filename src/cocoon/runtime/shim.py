"""Starting the per-process shim: the host process an engine waits on for one guest process.

`spawn()` forks it off the calling CLI; the child takes the terminal it is given (if any) and
execs the shim's own small program (`cocoon.runtime.shimproc`), so it keeps none of the CLI's
memory. The CLI waits (`wait_attached`) until the shim has handed its stdio to the monitor: from
then on the monitor kills the guest process when the shim goes away; before then nobody would,
so a shim that dies first (killed, or failed) is the CLI's to report, and the guest process
its to kill. The CLI then exits and the shim is adopted by the engine's subreaper (conmon,
containerd-shim-runc-v2), which waits for it and takes its exit status as the container's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from cocoon.runtime.shimwire import ATTACHED, FAILED, LOST_STATUS, REPORT_MAX

__all__ = ["LOST_STATUS", "ShimSpec", "spawn", "wait_attached"]

ATTACH_TIMEOUT = 30.0  # a shim attaches in tens of ms; a loaded host can delay it


@dataclass(frozen=True)
class ShimSpec:
    shim_socket: Path              # the sandbox monitor's socket for shims
    container_id: str
    rootfs: str                    # the container's rootfs on the host: the shim's mount root
    exec_id: str = ""
    console: int | None = None     # a host pty slave to use as stdio and controlling tty
    netns: str | None = None       # "new", a path to join, or None for the caller's
    log_path: Path | None = None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-I", "-m", "cocoon.runtime.shimproc",
                "--socket", str(self.shim_socket), "--container", self.container_id,
                "--rootfs", self.rootfs]
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


def spawn(spec: ShimSpec) -> tuple[int, int]:
    """Fork the shim; return its pid and the read end of its report pipe (for
    `wait_attached`, which closes it). The caller must not wait for the shim."""
    report, child_end = os.pipe2(os.O_CLOEXEC)
    argv = [*spec.argv(), "--report-fd", str(child_end)]
    try:
        pid = os.fork()
    except BaseException:
        os.close(report)
        os.close(child_end)
        raise
    if pid:
        os.close(child_end)
        return pid, report
    try:
        os.close(report)
        if spec.console is not None:
            _take_console(spec.console)
        os.set_inheritable(child_end, True)
        os.closerange(3, child_end)
        os.closerange(child_end + 1, 65536)
        os.execv(argv[0], argv)
    except BaseException:  # the child must never return into the caller's code
        with contextlib.suppress(Exception):
            os.write(2, f"cocoon: cannot start the shim for {spec.container_id}\n".encode())
    finally:
        os._exit(LOST_STATUS)


def wait_attached(report: int, timeout: float = ATTACH_TIMEOUT) -> str | None:
    """Wait until the shim says its attach is sent (the monitor has it then, even if the shim
    dies next); None then, else why not (the shim's own reason, or it died or took too long).
    Closes `report`."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < REPORT_MAX:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([report], [], [], remaining)[0]:
                return f"it did not attach within {timeout:.0f} s"
            chunk = os.read(report, REPORT_MAX - len(data))
            if not chunk:
                return "it exited before it attached"
            data += chunk
    finally:
        os.close(report)
    if data.startswith(FAILED):
        return data[len(FAILED):].decode(errors="replace").strip()
    return None if data == ATTACHED else f"it reported {data!r}"
