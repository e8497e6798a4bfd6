"""`AsyncSandbox`: a throwaway VM with one container, driven from asyncio.

See `cocoon.api` for the whole picture; `Sandbox` is the same for synchronous callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import shlex
import signal
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from cocoon.api import boot as boots
from cocoon.api import spec as specs
from cocoon.api.image import ImageSource
from cocoon.api.process import AsyncProcess, CompletedProcess
from cocoon.api.spec import BUSYBOX, Mount
from cocoon.errors import (
    CalledProcessError,
    CocoonError,
    ConfigError,
    ProcessTimeoutError,
    SandboxError,
    SandboxTimeoutError,
)
from cocoon.oci import convert
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.client import SandboxClient

T = TypeVar("T")
BOOT_TIMEOUT = 120.0
DEFAULT_HOSTNAME = "sandbox"
KILL_TIMEOUT = 5.0


async def in_thread(call: Callable[[], T]) -> T:
    """`call()` in a thread of its own (not the loop's executor: ten sandboxes starting at once
    must not wait for each other's turn in a small pool)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            result = call()
        except BaseException as err:  # handed to the waiting coroutine
            loop.call_soon_threadsafe(settle, None, err)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=body, name="cocoon-api", daemon=True).start()
    return await asyncio.shield(done)


class AsyncSandbox:
    """A sandbox: a VM of its own with one container, for running untrusted code.

        async with AsyncSandbox(memory_mib=64, timeout=30) as sandbox:
            result = await sandbox.run(["sh", "-c", "echo hello"])

    Args:
        image: the root filesystem: None or "busybox" for the built-in busybox image, or the
            path of a root filesystem directory, an OCI image layout directory or an OCI
            archive (`podman save --format oci-archive`). It is never written to: the
            sandbox writes to an overlay of its own.
        memory_mib: the container's memory limit in MiB (None: no limit but the VM's). A
            process that goes over it is killed by the guest's OOM killer, and its `run` or
            `wait` raises `OutOfMemoryError`.
        vcpus: the VM's virtual CPUs.
        network: False (the default) for no network at all; True for a user-mode NIC through
            which the sandbox reaches out (as `--network host` does).
        mounts: host paths bound into the sandbox (`Mount`, read-only by default).
        env: environment variables of every process, over the image's.
        timeout: seconds, counted from the moment the sandbox is ready, after which the VM
            is killed, whatever it is doing; every call then raises `SandboxTimeoutError`.
        hostname: the sandbox's host name.
    """

    def __init__(self, image: ImageSource = None, *, memory_mib: int | None = None,
                 vcpus: int = 1, network: bool = False, mounts: Sequence[Mount] = (),
                 env: Mapping[str, str] | None = None, timeout: float | None = None,
                 hostname: str = DEFAULT_HOSTNAME) -> None:
        self.options = boots.Options(image=image, memory_mib=memory_mib, vcpus=vcpus,
                                     network=network, mounts=tuple(mounts),
                                     env=dict(env or {}), hostname=hostname,
                                     boot_timeout=BOOT_TIMEOUT)
        self.timeout = timeout
        self.id = boots.new_id()
        self._booted: boots.Booted | None = None
        self._client: SandboxClient | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._killer: asyncio.Task[None] | None = None
        self._processes: set[AsyncProcess] = set()
        self._oom_kills = 0
        self.expired = False
        self.closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> AsyncSandbox:
        """Start the VM and its container (blocks only this coroutine)."""
        if self._booted is not None or self.closed:
            raise SandboxError(f"sandbox {self.id} was started already")
        booted = await in_thread(lambda: boots.boot(self.options, self.id))
        self._booted = booted
        try:
            self._client = await SandboxClient.connect(booted.layout.monitor_socket,
                                                       timeout=10.0)
            agent = self._client.agent
            await agent.create_container(self.id, booted.oci)
            await agent.start_container(self.id)
        except BaseException:
            await self.close()
            raise
        if self.timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._killer = asyncio.get_running_loop().create_task(self._shut_down())

    async def close(self) -> None:
        """Stop the VM and remove every trace of it on the host; safe to call again."""
        if self._timer is not None:
            self._timer.cancel()
        self.closed = True
        if self._killer is not None:
            await asyncio.shield(self._killer)
        await self._shut_down()

    async def _shut_down(self) -> None:
        # calls still waiting on the VM (a `run` in another task) fail when the connection
        # closes, each with the error `_guard` gives it
        self._processes.clear()
        client, self._client = self._client, None
        if client is not None and not self.expired:
            # the container's processes killed first, as `cocoon delete` does: the guest's
            # stop then has nothing to wait for (the holding process ignores SIGTERM)
            with contextlib.suppress(CocoonError, OSError, TimeoutError):
                await client.agent.signal_process(self.id, "", signal.SIGKILL, all=True,
                                                  timeout=KILL_TIMEOUT)
                await client.agent.wait_process(self.id, "", timeout=KILL_TIMEOUT)
        if client is not None:
            with contextlib.suppress(CocoonError, OSError, RuntimeError):
                await client.close()
        booted, self._booted = self._booted, None
        if booted is not None:
            await in_thread(lambda: boots.shut_down(booted))

    async def __aenter__(self) -> AsyncSandbox:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- what the calls see when the sandbox goes away --------------------------------------

    def _guard(self, err: BaseException) -> BaseException:
        """The error a caller sees for `err`, raised by a call into the sandbox."""
        if self.expired:
            return SandboxTimeoutError(f"sandbox {self.id}: its timeout of {self.timeout} s "
                                       "expired and its VM was killed", sandbox=self.id)
        if self.closed:
            return SandboxError(f"sandbox {self.id} is closed", sandbox=self.id)
        return err

    def _agent(self) -> AgentClient:
        if self._client is None or self._booted is None:
            raise self._guard(SandboxError(f"sandbox {self.id} is not running (use it in a "
                                           "`with` block, or call start())", sandbox=self.id))
        return self._client.agent

    async def _oom_check(self) -> bool:
        """Whether the container has had an OOM kill since the last one seen."""
        try:
            stats = await self._agent().stats_container(self.id, timeout=10.0)
        except CocoonError:
            return False
        count = int(stats.cgroup_stats.memory_stats.usage.failcnt)
        fresh = count > self._oom_kills
        self._oom_kills = max(count, self._oom_kills)
        return fresh

    # --- processes ---------------------------------------------------------------------------

    async def popen(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, terminal: bool = False, stdout: bool = True,
                    stderr: bool = True) -> AsyncProcess:
        """Start `args` in the sandbox and return at once.

        Args:
            args: the program and its arguments (looked up in the image's PATH).
            env: variables added to the sandbox's for this process.
            cwd: its working directory (the image's by default).
            terminal: give it a terminal: `stdout` carries both outputs, `resize` sets its
                size.
            stdout: capture its stdout in `process.stdout` (False: thrown away).
            stderr: capture its stderr in `process.stderr` (False: thrown away).
        """
        agent = self._agent()
        assert self._booted is not None
        spec = self._booted.spec
        assert spec.process is not None
        environment = specs.merge_env(spec.process.env, env) if env else None
        proc = specs.process(spec, args, env=environment, cwd=cwd, terminal=terminal)
        exec_id = "exec-" + secrets.token_hex(6)
        try:
            await agent.exec_process(self.id, exec_id, convert.process_to_proto(proc))
        except CocoonError as err:
            guarded = self._guard(err)
            if guarded is err:
                raise SandboxError(f"cannot start {list(proc.args)!r} in sandbox {self.id}: "
                                   f"{err}", sandbox=self.id) from err
            raise guarded from err
        process = AsyncProcess(agent, self.id, exec_id, list(proc.args),
                               capture_stdout=stdout, capture_stderr=stderr, terminal=terminal,
                               oom_check=self._oom_check, guard=self._guard)
        self._processes.add(process)
        return process

    @overload
    async def run(self, args: Sequence[str], *, input: bytes | str | None = ...,
                  timeout: float | None = ..., check: bool = ...,
                  env: Mapping[str, str] | None = ..., cwd: str | None = ...,
                  text: Literal[False] = ...) -> CompletedProcess[bytes]: ...

    @overload
    async def run(self, args: Sequence[str], *, input: bytes | str | None = ...,
                  timeout: float | None = ..., check: bool = ...,
                  env: Mapping[str, str] | None = ..., cwd: str | None = ...,
                  text: Literal[True]) -> CompletedProcess[str]: ...

    async def run(self, args: Sequence[str], *, input: bytes | str | None = None,
                  timeout: float | None = None, check: bool = False,
                  env: Mapping[str, str] | None = None, cwd: str | None = None,
                  text: bool = False) -> CompletedProcess[bytes] | CompletedProcess[str]:
        """Run `args` in the sandbox to its end, like `subprocess.run` with both outputs
        captured.

        Args:
            args: the program and its arguments.
            input: what the process reads on its stdin (then end of file; with None, end of
                file at once).
            timeout: seconds after which the process is killed and `ProcessTimeoutError`
                raised (with the output so far); the sandbox lives on.
            check: raise `CalledProcessError` when the exit status is not 0.
            env: variables added to the sandbox's for this process.
            cwd: its working directory.
            text: `input` and the outputs are str (UTF-8) rather than bytes.

        Returns:
            A `CompletedProcess`; `returncode` is the status as a shell has it (128 + N
            for signal N).

        Raises:
            OutOfMemoryError: the process went over `memory_mib` and was killed.
            SandboxTimeoutError: the sandbox's own timeout expired meanwhile.
        """
        process = await self.popen(args, env=env, cwd=cwd)
        try:
            return await self._finish(process, input, timeout, check, text)
        finally:
            self._processes.discard(process)

    async def _finish(self, process: AsyncProcess, input: bytes | str | None,
                      timeout: float | None, check: bool,
                      text: bool) -> CompletedProcess[bytes] | CompletedProcess[str]:
        assert process.stdout is not None and process.stderr is not None
        data = input.encode() if isinstance(input, str) else input

        async def feed() -> None:
            if data:
                await process.write(data)
            await process.close_stdin()

        async def whole() -> tuple[int, bytes, bytes]:
            assert process.stdout is not None and process.stderr is not None
            outputs = asyncio.gather(process.stdout.read(), process.stderr.read())
            await feed()
            status = await process.wait()
            out, err = await outputs
            return status, out, err

        task = asyncio.ensure_future(whole())
        try:
            status, out, err = await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            await process.kill()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await process.cancel()
            raise ProcessTimeoutError(f"{process.args!r} did not end within {timeout} s and was "
                                      "killed", process.args, None) from None
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await process.cancel()
            raise
        if text:
            result: CompletedProcess[Any] = CompletedProcess(
                process.args, status, out.decode(errors="replace"),
                err.decode(errors="replace"))
        else:
            result = CompletedProcess(process.args, status, out, err)
        if check and status:
            raise CalledProcessError(f"{process.args!r} exited with status {status}: "
                                     f"{err.decode(errors='replace').strip()[-200:]}",
                                     process.args, status, result.stdout, result.stderr)
        return result

    # --- files (through the sandbox's own busybox, in the container) -------------------------

    async def _busybox(self, script: str, *args: str, input: bytes | None = None,
                       what: str) -> bytes:
        result = await self.run([BUSYBOX, "sh", "-c", script, BUSYBOX, *args], input=input)
        if result.returncode:
            message = result.stderr.decode(errors="replace").strip().splitlines()
            raise SandboxError(f"sandbox {self.id}: {what}: "
                               f"{message[-1] if message else f'status {result.returncode}'}",
                               sandbox=self.id)
        return result.stdout

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write `data` to the file `path` in the sandbox (made or replaced)."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        await self._busybox('"$0" cat > "$1" && "$0" chmod "$2" "$1"', path, f"{mode:o}",
                            input=raw, what=f"cannot write {path}")

    async def read_file(self, path: str) -> bytes:
        """The bytes of the file `path` in the sandbox."""
        return await self._busybox('exec "$0" cat "$1"', path, what=f"cannot read {path}")

    async def copy_in(self, source: str | os.PathLike[str], target: str) -> None:
        """Copy the host file or directory `source` to `target` in the sandbox (a directory's
        contents go into `target`, made if missing). Owners are not kept."""
        source = Path(source)
        if source.is_file():
            await self.write_file(target, source.read_bytes(), source.stat().st_mode & 0o7777)
            return
        if not source.is_dir():
            raise ConfigError(f"copy_in: {source} is neither a file nor a directory",
                              path=str(source))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=".")
        await self._busybox('"$0" mkdir -p "$1" && exec "$0" tar -x -o -C "$1"', target,
                            input=buffer.getvalue(), what=f"cannot copy into {target}")

    async def copy_out(self, source: str, target: str | os.PathLike[str]) -> None:
        """Copy the file or directory `source` in the sandbox to `target` on the host (a
        directory's contents go into `target`, made if missing). What the sandbox sends is
        untrusted: links out of `target`, devices and absolute names are refused
        (tarfile's `data` filter)."""
        target = Path(target)
        script = ('if [ -d "$1" ]; then echo D; cd "$1" && exec "$0" tar -c .; '
                  'else echo F; exec "$0" cat "$1"; fi')
        data = await self._busybox(script, source, what=f"cannot copy out {source}")
        kind, _, body = data.partition(b"\n")
        if kind == b"F":
            target.write_bytes(body)
            return
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            try:
                tar.extractall(target, filter="data")
            except tarfile.FilterError as err:
                raise SandboxError(f"sandbox {self.id}: copy_out {source}: refused "
                                   f"{err}", sandbox=self.id) from err

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running" if self._booted else "new"
        return f"<AsyncSandbox {self.id} {state} image={shlex.quote(str(self.options.image))}>"
