"""Processes the agent started, and the reaper that collects every child's exit status.

As PID 1 the agent inherits every orphan in the guest. One SIGCHLD handler reaps them all and
hands each status to the process registered under that pid; a status that arrives before its pid
is registered (a fast exit) is kept until it is claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import OrderedDict

from cocoon.agent.stdio import InputStream, OutputStream

logger = logging.getLogger("cocoon.agent.process")


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


class Process:
    """One process of a container: its pid, streams and exit status."""

    def __init__(self, container_id: str, exec_id: str, *, terminal: bool,
                 stdin: InputStream | None, stdout: OutputStream | None,
                 stderr: OutputStream | None, pty_master: int | None = None) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.terminal = terminal
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.pty_master = pty_master
        self.pid = 0
        self.exit_status: int | None = None
        self._exited = asyncio.Event()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def set_exited(self, code: int) -> None:
        if not self._exited.is_set():
            self.exit_status = code
            self._exited.set()
            if self.stdin is not None:
                self.stdin.close()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.exit_status is not None
        return self.exit_status

    def attach_terminal(self, master: int) -> None:
        """Take over the pty master that the process's setup opened inside the container.

        The streams get their own duplicates, so each closes only what it owns and
        `pty_master` stays valid for window-size changes until `close()`.
        """
        self.pty_master = master
        self.stdout = OutputStream(os.dup(master), is_pty=True)
        self.stdin = None if self.exited else InputStream(os.dup(master))

    def signal(self, sig: int) -> None:
        if self.pid and not self.exited:
            os.kill(self.pid, sig)

    def close(self) -> None:
        for stream in (self.stdout, self.stderr, self.stdin):
            if stream is not None:
                stream.close()
        if self.pty_master is not None:
            with contextlib.suppress(OSError):
                os.close(self.pty_master)
            self.pty_master = None


class Reaper:
    """Reaps every child of the agent on SIGCHLD and routes statuses to registered processes."""

    MAX_UNCLAIMED = 4096
    # a status not claimed within this time belongs to an orphan nobody registers; dropping it
    # keeps a later process that reuses the pid from inheriting a stale status
    UNCLAIMED_TTL = 30.0

    def __init__(self) -> None:
        self._processes: dict[int, Process] = {}
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._unclaimed: OrderedDict[int, tuple[int, float]] = OrderedDict()

    def _claim(self, pid: int) -> int | None:
        entry = self._unclaimed.pop(pid, None)
        if entry is None or time.monotonic() - entry[1] > self.UNCLAIMED_TTL:
            return None
        return entry[0]

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def register(self, pid: int, process: Process) -> None:
        process.pid = pid
        code = self._claim(pid)
        if code is not None:
            process.set_exited(code)
            return
        self._processes[pid] = process

    def wait_pid(self, pid: int) -> asyncio.Future[int]:
        """A future for the exit status of a child that is not a container process."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        code = self._claim(pid)
        if code is not None:
            future.set_result(code)
        else:
            self._waiters[pid] = future
        return future

    def forget(self, pid: int) -> None:
        """Drop the `wait_pid` waiter of `pid` (it turned out to be a container process)."""
        future = self._waiters.pop(pid, None)
        if future is not None and not future.done():
            future.cancel()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            process = self._processes.pop(pid, None)
            waiter = self._waiters.pop(pid, None)
            if process is not None:
                logger.debug("process %s/%s (pid %d) exited %d", process.container_id,
                             process.exec_id or "init", pid, code)
                process.set_exited(code)
            elif waiter is not None:
                if not waiter.done():
                    waiter.set_result(code)
            else:
                self._unclaimed[pid] = (code, time.monotonic())
                while len(self._unclaimed) > self.MAX_UNCLAIMED:
                    self._unclaimed.popitem(last=False)
