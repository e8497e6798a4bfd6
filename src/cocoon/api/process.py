"""A process running in a sandbox, from the host: its streams, its signals, its end.

It is started with the agent's ExecProcess and driven with the calls the CLI's relay makes:
ReadStdout and ReadStderr until the end of each stream, WriteStdin (pipelined, as the relay
does it) and CloseStdin, SignalProcess, WaitProcess. Its exit status is the shell's form: the
code, or 128 + the signal that killed it. A process the guest's OOM killer killed ends in
`OutOfMemoryError`, not in a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cocoon.api.streams import Stream
from cocoon.errors import CocoonError, OutOfMemoryError, ProcessTimeoutError, RPCError
from cocoon.sandbox.agentclient import READ_SIZE, AgentClient
from cocoon.sandbox.stdinpipe import write_pipelined
from cocoon.ttrpc.status import StatusCode

T = TypeVar("T", bytes, str)
KILLED = 128 + signal.SIGKILL
SIGNAL_TIMEOUT = 10.0


@dataclass(frozen=True)
class CompletedProcess(Generic[T]):
    """What `run` returns, shaped like `subprocess.CompletedProcess`.

    `returncode` is the exit status as a shell reports it (128 + N for signal N)."""

    args: list[str]
    returncode: int
    stdout: T
    stderr: T

    def check_returncode(self) -> None:
        """Raise `CalledProcessError` if the exit status is non-zero."""
        if self.returncode:
            from cocoon.errors import CalledProcessError

            raise CalledProcessError(f"{self.args!r} exited with status {self.returncode}",
                                     self.args, self.returncode, self.stdout, self.stderr)


class AsyncProcess:
    """A process started by `AsyncSandbox.popen`.

    `stdout` and `stderr` are `Stream`s (None when not captured; with a terminal, `stderr`
    is part of `stdout`); write to stdin with `write`, end it with `close_stdin`."""

    def __init__(self, agent: AgentClient, container_id: str, exec_id: str, args: list[str],
                 *, capture_stdout: bool, capture_stderr: bool, terminal: bool,
                 oom_check: Callable[[], Awaitable[bool]],
                 guard: Callable[[BaseException], BaseException]) -> None:
        self.args = args
        self.terminal = terminal
        self._agent = agent
        self._cid = container_id
        self._eid = exec_id
        self._oom_check = oom_check
        self._guard = guard
        self.stdout: Stream | None = Stream() if capture_stdout else None
        self.stderr: Stream | None = Stream() if capture_stderr and not terminal else None
        self.returncode: int | None = None
        self._pumps = [asyncio.create_task(self._pump(False, self.stdout))]
        if not terminal:
            self._pumps.append(asyncio.create_task(self._pump(True, self.stderr)))
        self._waiter: asyncio.Task[int] | None = None
        self._stdin_closed = False

    async def _pump(self, stderr: bool, stream: Stream | None) -> None:
        read = self._agent.read_stderr if stderr else self._agent.read_stdout
        try:
            while True:
                try:
                    data = await read(self._cid, self._eid, READ_SIZE, timeout=None)
                except RPCError as err:
                    if err.code == StatusCode.NOT_FOUND:
                        return
                    raise
                if not data:
                    return
                if stream is not None:
                    await stream.feed(data)
        except CocoonError:
            return  # the sandbox went away: `wait` says why
        finally:
            if stream is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await stream.feed_eof()

    @property
    def exec_id(self) -> str:
        """The process's id in its sandbox (the agent's exec id)."""
        return self._eid

    async def write(self, data: bytes) -> None:
        """Write `data` to the process's stdin (returns once the guest took it all)."""
        async def chunks() -> AsyncIterator[bytes]:
            yield data

        try:
            await write_pipelined(self._agent, self._cid, self._eid, chunks())
        except CocoonError as err:
            raise self._guard(err) from err

    async def close_stdin(self) -> None:
        """End of file on the process's stdin."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        try:
            await self._agent.close_stdin(self._cid, self._eid)
        except RPCError as err:
            if err.code not in (StatusCode.NOT_FOUND, StatusCode.FAILED_PRECONDITION):
                raise self._guard(err) from err
        except CocoonError as err:
            raise self._guard(err) from err

    async def send_signal(self, sig: int) -> None:
        """Send `sig` to the process (nothing if it has ended)."""
        if self.returncode is not None:
            return
        try:
            await self._agent.signal_process(self._cid, self._eid, int(sig),
                                             timeout=SIGNAL_TIMEOUT)
        except RPCError as err:
            if err.code != StatusCode.NOT_FOUND:
                raise self._guard(err) from err
        except CocoonError as err:
            raise self._guard(err) from err

    async def terminate(self) -> None:
        """Send SIGTERM."""
        await self.send_signal(signal.SIGTERM)

    async def kill(self) -> None:
        """Send SIGKILL."""
        await self.send_signal(signal.SIGKILL)

    async def resize(self, rows: int, columns: int) -> None:
        """The size of the process's terminal."""
        try:
            await self._agent.tty_win_resize(self._cid, self._eid, rows, columns)
        except CocoonError as err:
            raise self._guard(err) from err

    async def _wait(self) -> int:
        status = await self._agent.wait_process(self._cid, self._eid, timeout=None)
        if not 0 <= status <= 255:
            status = 255
        return status

    async def wait(self, timeout: float | None = None) -> int:
        """The exit status, once the process has ended (its output may still be arriving in
        `stdout` and `stderr`, until their end). Raises `ProcessTimeoutError` after
        `timeout` seconds (the process keeps running) and `OutOfMemoryError` if the OOM
        killer killed it."""
        if self._waiter is None:
            self._waiter = asyncio.create_task(self._wait())
        try:
            status = await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except TimeoutError:
            raise ProcessTimeoutError(f"{self.args!r} did not end within {timeout} s",
                                      self.args, None) from None
        except CocoonError as err:
            raise self._guard(err) from err
        if self.returncode is None:
            self.returncode = status
            if status == KILLED and await self._oom_check():
                self._oom = True
        if getattr(self, "_oom", False):
            raise OutOfMemoryError(f"{self.args!r} was killed by the out-of-memory killer: "
                                   "it went over the sandbox's memory limit", self.args,
                                   self.returncode)
        return self.returncode

    async def cancel(self) -> None:
        """Stop relaying (the process is killed first if it still runs)."""
        if self.returncode is None:
            with contextlib.suppress(CocoonError):
                await self.kill()
        for task in self._pumps:
            task.cancel()
        if self._waiter is not None:
            self._waiter.cancel()
        await asyncio.gather(*self._pumps, *(t for t in [self._waiter] if t),
                             return_exceptions=True)
