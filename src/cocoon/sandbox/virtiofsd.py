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
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cocoon.config import current as settings
from cocoon.errors import SandboxError

logger = logging.getLogger("cocoon.sandbox.virtiofsd")

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
_PR_SET_PDEATHSIG = 1


CACHE_MODES = ("auto", "always", "none")


@dataclass(frozen=True)
class Tuning:
    """How virtiofsd serves the share; bench/share.py measures the choices.

    `cache=auto` keeps the guest's view of a file current within a second of a host change
    (a bind volume is shared with the host); `always` trusts the guest's cache for good and
    `none` caches nothing. `threads=0` handles requests on the queue's own thread (virtiofsd's
    default); `writeback` lets the guest's page cache absorb writes.
    """

    cache: str = "auto"
    threads: int = 0
    writeback: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tuning:
        """[share] cache, threads, writeback; COCOON_VIRTIOFS_CACHE, _THREADS, _WRITEBACK (0/1)."""
        share = settings(env).share  # [share] of the config file, the variables first
        return cls(share.cache, share.threads, share.writeback)


def command(listen_fd: int, source: Path, binary: Path = VIRTIOFSD,
            tuning: Tuning = Tuning()) -> list[str]:
    argv = [
        str(binary),
        f"--fd={listen_fd}",
        "-o", f"source={source}",
        "-o", f"cache={tuning.cache}",
        "-o", "sandbox=namespace",
        "-o", "announce_submounts",
        "-o", "log_level=warn",
        "--rlimit-nofile=0",  # keep the caller's limit: raising it fails in capped sandboxes
    ]
    if tuning.writeback:
        argv += ["-o", "writeback"]
    if tuning.threads:
        argv.append(f"--thread-pool-size={tuning.threads}")
    return argv


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Virtiofsd:
    """`owner`: the uid (and gid) of the QEMU that connects, given the socket; without one it
    is root's and a QEMU started later takes it over (`cocoon.hypervisor.vmuser`)."""

    def __init__(self, socket: Path, source: Path, log: Path, owner: int | None = None) -> None:
        self.socket = socket
        self.source = source
        self.log = log
        self.owner = owner
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start virtiofsd on a socket that listens before it runs.

        The socket is bound and listening here and handed over (`--fd`): QEMU may connect at
        once. (With `--socket-path`, the socket file appears when virtiofsd binds it and
        accepts only after its listen(): a host busy enough saw QEMU refused in between.)
        """
        if not VIRTIOFSD.exists():
            raise SandboxError(f"virtiofsd not found at {VIRTIOFSD} "
                               "(Debian package qemu-system-common)")
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(str(self.socket))
            # QEMU's user owns the directory: the name may no longer be this socket
            os.chmod(self.socket, 0o600, follow_symlinks=False)
            if self.owner is not None:
                os.chown(self.socket, self.owner, self.owner, follow_symlinks=False)
            listener.listen(1)
            with open(self.log, "ab") as log:
                self.proc = await asyncio.create_subprocess_exec(
                    *command(listener.fileno(), self.source, tuning=Tuning.from_env()),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=(listener.fileno(),), preexec_fn=_die_with_parent)
        finally:
            listener.close()  # virtiofsd holds its own copy

    async def wait(self) -> int:
        """Until virtiofsd exits; its exit status."""
        assert self.proc is not None
        return await self.proc.wait()

    def failure(self) -> str | None:
        """Why virtiofsd is gone (the end of its log), or None while it runs."""
        if self.running:
            return None
        tail = self.log.read_text(errors="replace")[-400:] if self.log.exists() else ""
        return f"virtiofsd exited: {tail.strip() or 'no output'}"

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
