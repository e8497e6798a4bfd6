"""virtiofsd for one sandbox: QEMU 7.2's C daemon, sandboxed to the sandbox's share.

It runs in its own mount, pid and network namespaces with the share as its root
(`sandbox=namespace`), exits when QEMU disconnects, and dies with the monitor
(PR_SET_PDEATHSIG), so a crashed monitor cannot leave it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from pathlib import Path

from cocoon.errors import SandboxError

logger = logging.getLogger("cocoon.sandbox.virtiofsd")

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
_PR_SET_PDEATHSIG = 1


def command(socket: Path, source: Path, binary: Path = VIRTIOFSD) -> list[str]:
    return [
        str(binary),
        f"--socket-path={socket}",
        "-o", f"source={source}",
        "-o", "cache=auto",
        "-o", "sandbox=namespace",
        "-o", "announce_submounts",
        "-o", "log_level=warn",
        "--rlimit-nofile=0",  # keep the caller's limit: raising it fails in capped sandboxes
    ]


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Virtiofsd:
    def __init__(self, socket: Path, source: Path, log: Path) -> None:
        self.socket = socket
        self.source = source
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 5.0) -> None:
        if not VIRTIOFSD.exists():
            raise SandboxError(f"virtiofsd not found at {VIRTIOFSD} "
                               "(Debian package qemu-system-common)")
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *command(self.socket, self.source), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.returncode is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-400:] if self.log.exists() else ""
                await self.stop()
                raise SandboxError(f"virtiofsd did not start: {tail.strip() or 'no output'}",
                                   log=str(self.log))
            await asyncio.sleep(0.005)

    async def stop(self, timeout: float = 2.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
