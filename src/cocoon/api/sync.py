"""`Sandbox`: `AsyncSandbox` for synchronous callers.

Each `Sandbox` runs its `AsyncSandbox` on an event loop in a thread of its own, so that it can
be used from any thread (ten threads with ten sandboxes, say) and keeps one connection to its
VM for all its calls; its methods block until the call on that loop is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from cocoon.api.core import DEFAULT_HOSTNAME, AsyncSandbox
from cocoon.api.image import ImageSource
from cocoon.api.process import AsyncProcess, CompletedProcess
from cocoon.api.spec import Mount
from cocoon.api.streams import Stream

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread until `stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cocoon-sandbox",
                                       daemon=True)
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:  # KeyboardInterrupt in the caller: stop the call too
            future.cancel()
            with contextlib.suppress(concurrent.futures.CancelledError, Exception):
                future.result(timeout=30)
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class OutputStream:
    """A process's stdout or stderr, read from a synchronous caller."""

    def __init__(self, loop: _Loop, stream: Stream) -> None:
        self._loop = loop
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (everything to the end when `n` < 0); b"" at the end."""
        return self._loop.call(self._stream.read(n))

    def readline(self) -> bytes:
        """The next line with its newline (without one at the end); b"" at the end."""
        return self._loop.call(self._stream.readline())

    def __iter__(self) -> OutputStream:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class Process:
    """A process started by `Sandbox.popen`, like a `subprocess.Popen`: `stdout` and
    `stderr` to read from (None when not captured), `write` and `close_stdin` for its input,
    `wait`, `send_signal`, `terminate`, `kill`, `resize` (with a terminal)."""

    def __init__(self, loop: _Loop, process: AsyncProcess) -> None:
        self._loop = loop
        self._process = process
        self.args = process.args
        self.stdout = OutputStream(loop, process.stdout) if process.stdout else None
        self.stderr = OutputStream(loop, process.stderr) if process.stderr else None

    @property
    def returncode(self) -> int | None:
        """The exit status once `wait` has seen it, else None."""
        return self._process.returncode

    def write(self, data: bytes) -> None:
        """Write `data` to the process's stdin (returns once the guest took it all)."""
        self._loop.call(self._process.write(data))

    def close_stdin(self) -> None:
        """End of file on the process's stdin."""
        self._loop.call(self._process.close_stdin())

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (see `AsyncProcess.wait`)."""
        return self._loop.call(self._process.wait(timeout))

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process (nothing if it has ended)."""
        self._loop.call(self._process.send_signal(sig))

    def terminate(self) -> None:
        """Send SIGTERM."""
        self._loop.call(self._process.terminate())

    def kill(self) -> None:
        """Send SIGKILL."""
        self._loop.call(self._process.kill())

    def resize(self, rows: int, columns: int) -> None:
        """The size of the process's terminal (with `terminal=True`)."""
        self._loop.call(self._process.resize(rows, columns))


class Sandbox:
    """A sandbox: a VM of its own with one container, for running untrusted code.

        with Sandbox(memory_mib=64, timeout=30) as sandbox:
            result = sandbox.run(["sh", "-c", "echo hello"])
            print(result.stdout)

    The arguments are `AsyncSandbox`'s. Leaving the `with` block, normally or by an
    exception, stops the VM and removes every trace of it on the host.
    """

    def __init__(self, image: ImageSource = None, *, memory_mib: int | None = None,
                 vcpus: int = 1, network: bool = False, mounts: Sequence[Mount] = (),
                 env: Mapping[str, str] | None = None, timeout: float | None = None,
                 hostname: str = DEFAULT_HOSTNAME) -> None:
        self._async = AsyncSandbox(image, memory_mib=memory_mib, vcpus=vcpus, network=network,
                                   mounts=mounts, env=env, timeout=timeout, hostname=hostname)
        self._loop: _Loop | None = None

    @property
    def id(self) -> str:
        """The sandbox's id (its container's in the guest, and its VM's)."""
        return self._async.id

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            from cocoon.errors import SandboxError

            raise SandboxError(f"sandbox {self.id} is not running (use it in a `with` "
                               "block, or call start())", sandbox=self.id)
        return self._loop.call(coroutine)

    def start(self) -> Sandbox:
        """Start the VM and its container."""
        self._loop = _Loop()
        try:
            self._loop.call(self._async.start())
        except BaseException:
            self._loop.stop()
            self._loop = None
            raise
        return self

    def close(self) -> None:
        """Stop the VM and remove every trace of it; safe to call again."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.call(self._async.close())
        finally:
            loop.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @overload
    def run(self, args: Sequence[str], *, input: bytes | str | None = ...,
            timeout: float | None = ..., check: bool = ...,
            env: Mapping[str, str] | None = ..., cwd: str | None = ...,
            text: Literal[False] = ...) -> CompletedProcess[bytes]: ...

    @overload
    def run(self, args: Sequence[str], *, input: bytes | str | None = ...,
            timeout: float | None = ..., check: bool = ...,
            env: Mapping[str, str] | None = ..., cwd: str | None = ...,
            text: Literal[True]) -> CompletedProcess[str]: ...

    def run(self, args: Sequence[str], *, input: bytes | str | None = None,
            timeout: float | None = None, check: bool = False,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            text: bool = False) -> CompletedProcess[bytes] | CompletedProcess[str]:
        """Run `args` to its end (see `AsyncSandbox.run`)."""
        result: CompletedProcess[bytes] | CompletedProcess[str] = self._call(
            self._async.run(args, input=input, timeout=timeout, check=check, env=env,
                            cwd=cwd, text=text))  # type: ignore[call-overload]
        return result

    def popen(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | None = None, terminal: bool = False, stdout: bool = True,
              stderr: bool = True) -> Process:
        """Start `args` and return at once (see `AsyncSandbox.popen`)."""
        process = self._call(self._async.popen(args, env=env, cwd=cwd, terminal=terminal,
                                               stdout=stdout, stderr=stderr))
        assert self._loop is not None
        return Process(self._loop, process)

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write `data` to the file `path` in the sandbox."""
        self._call(self._async.write_file(path, data, mode))

    def read_file(self, path: str) -> bytes:
        """The bytes of the file `path` in the sandbox."""
        return self._call(self._async.read_file(path))

    def copy_in(self, source: str | os.PathLike[str], target: str) -> None:
        """Copy a host file or directory into the sandbox (see `AsyncSandbox.copy_in`)."""
        self._call(self._async.copy_in(source, target))

    def copy_out(self, source: str, target: str | os.PathLike[str]) -> None:
        """Copy a file or directory out of the sandbox (see `AsyncSandbox.copy_out`)."""
        self._call(self._async.copy_out(source, target))

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncSandbox", "Sandbox", 1)
