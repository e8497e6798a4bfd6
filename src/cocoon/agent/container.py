"""A container inside the guest: its init process, its execs, its cgroup and its status.

The forking and the in-child setup live in `launch`; this module keeps the agent-side view and
the lifecycle rules (created -> running -> stopped; paused in between), and talks to the
forked children over their sync pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cocoon.agent import launch, rootfs
from cocoon.agent.cgroups import Cgroup
from cocoon.agent.process import Process, Reaper
from cocoon.agent.stdio import InputStream, OutputStream
from cocoon.errors import RPCError
from cocoon.linux import syscalls as sc

logger = logging.getLogger("cocoon.agent.container")

SETUP_TIMEOUT = 60.0
SYNC_LINE_LIMIT = 64 * 1024


class ContainerError(RPCError):
    """A container operation failed; `code` is the gRPC status the host receives."""


# gRPC codes used here (the service maps ContainerError to the ttrpc status)
NOT_FOUND = 5
ALREADY_EXISTS = 6
FAILED_PRECONDITION = 9
INVALID_ARGUMENT = 3
INTERNAL = 13


class Status(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass
class ContainerConfig:
    """What CreateContainer needs, converted from the OCI spec by `plan`."""

    init: launch.InitPlan
    resources: dict[str, Any] = field(default_factory=dict)
    console_size: tuple[int, int] | None = None  # (rows, cols)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class _Streams:
    """The agent's and the child's ends of a new process's stdio.

    Without a terminal these are three pipes. With one, the child opens the pty itself, inside
    the container's own devpts (so the process sees /dev/pts/N, as under runc), and sends the
    master back over a socket pair: the console socket.
    """

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.console: socket.socket | None = None
        if terminal:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.console = ours
            self.child = launch.Stdio(-1, -1, -1, close=(ours.fileno(),),
                                      console=theirs.fileno())
            self.agent_fds: list[int] = []
            self.child_fds = [theirs.detach()]
        else:
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self.child = launch.Stdio(in_r, out_w, err_w, close=(in_w, out_r, err_r))
            self.agent_fds = [in_w, out_r, err_r]
            self.child_fds = [in_r, out_w, err_w]

    def process(self, container_id: str, exec_id: str) -> Process:
        if self.terminal:
            # the streams arrive with the pty master (`receive_console`)
            return Process(container_id, exec_id, terminal=True, stdin=None, stdout=None,
                           stderr=None)
        in_w, out_r, err_r = self.agent_fds
        self.agent_fds = []  # the process's streams own them now
        return Process(container_id, exec_id, terminal=False, stdin=InputStream(in_w),
                       stdout=OutputStream(out_r), stderr=OutputStream(err_r))

    def receive_console(self, process: Process, size: tuple[int, int] | None) -> None:
        """Take the pty master the child sent (it did so before reporting success)."""
        if self.console is None:
            return
        self.console.setblocking(False)
        try:
            _, fds, _, _ = socket.recv_fds(self.console, 16, 1)
        except BlockingIOError:
            fds = []
        finally:
            self.console.close()
            self.console = None
        if not fds:
            raise ContainerError(INTERNAL, f"{process.container_id}: the process's setup sent "
                                           "no terminal")
        if size:
            set_winsize(fds[0], *size)
        process.attach_terminal(fds[0])

    def close_child_ends(self) -> None:
        for fd in self.child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.child_fds = []

    def close_all(self) -> None:
        self.close_child_ends()
        for fd in self.agent_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.agent_fds = []
        if self.console is not None:
            self.console.close()
            self.console = None


def _done() -> asyncio.Future[int]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(0)
    return future


def _fork(body: Callable[[], NoReturn]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(127)
    return pid


class _SyncReader:
    """Reads the JSON lines a forked child writes on its sync pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self._eof = False

    async def next(self) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer:
            if self._eof:
                return None
            ready: asyncio.Future[None] = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(self.fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(self.fd)
            data = os.read(self.fd, 65536)
            if not data:
                self._eof = True
            self._buffer += data
            if len(self._buffer) > SYNC_LINE_LIMIT:
                raise ContainerError(INTERNAL, "container setup sent an oversized message")
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Container:
    def __init__(self, container_id: str, config: ContainerConfig, cgroup: Cgroup | None,
                 reaper: Reaper) -> None:
        self.id = container_id
        self.config = config
        self.cgroup = cgroup
        self.reaper = reaper
        self.init: Process | None = None
        self.execs: dict[str, Process] = {}
        self._start_fd: int | None = None
        self._sync: _SyncReader | None = None
        self.paused = False
        self.started = False

    # --- status ---------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        if self.init is None or self.init.exited:
            return Status.STOPPED
        if self.paused:
            return Status.PAUSED
        return Status.RUNNING if self.started else Status.CREATED

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            if self.init is None:
                raise ContainerError(NOT_FOUND, f"container {self.id} has no init process")
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise ContainerError(NOT_FOUND,
                                 f"container {self.id} has no process {exec_id!r}") from None

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def create(cls, container_id: str, config: ContainerConfig,
                     reaper: Reaper) -> Container:
        cgroup = Cgroup.create(container_id)
        try:
            cgroup.apply(config.resources)
        except (OSError, ValueError) as err:
            await cgroup.remove()
            raise ContainerError(INVALID_ARGUMENT, f"linux.resources: {err}") from err
        container = cls(container_id, config, cgroup, reaper)
        try:
            await container._spawn_init()
        except BaseException:
            await container.destroy()
            raise
        return container

    async def _spawn_init(self) -> None:
        plan = self.config.init
        plan.cgroup_procs = str(self.cgroup.path / "cgroup.procs") if self.cgroup else None
        streams = _Streams(plan.process.terminal)
        plan.rootfs.console = streams.terminal
        rootfs.reach_sources(plan.rootfs.rootfs, plan.rootfs.mounts)
        sync_r, sync_w = os.pipe()
        start_r, start_w = os.pipe()

        def body() -> NoReturn:
            os.close(sync_r)
            os.close(start_w)
            launch.run_init(plan, streams.child, sync_w, start_r)

        try:
            setup_pid = _fork(body)
        except BaseException:
            streams.close_all()
            for fd in (sync_r, sync_w, start_r, start_w):
                os.close(fd)
            raise
        os.close(sync_w)
        os.close(start_r)
        streams.close_child_ends()
        self._start_fd = start_w
        self._sync = _SyncReader(sync_r)
        process = streams.process(self.id, "")
        self.init = process  # from here on, destroy() releases what the process holds
        setup_done = self.reaper.wait_pid(setup_pid)
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                pid = await self._expect_pid(self._sync)
                setup_done = self._track(pid, process, setup_pid, setup_done)
                message = await self._sync.next()
                await setup_done
                if message is None or "error" in message:
                    raise ContainerError(FAILED_PRECONDITION, self._describe(message))
            streams.receive_console(process, self.config.console_size)
        except TimeoutError:
            raise ContainerError(INTERNAL,
                                 f"container {self.id}: setup did not finish in "
                                 f"{SETUP_TIMEOUT:.0f} s") from None
        finally:
            streams.close_all()

    def _track(self, pid: int, process: Process, setup_pid: int,
               setup_done: asyncio.Future[int]) -> asyncio.Future[int]:
        """Register the process's pid; return what still has to be awaited of its setup.

        Without a new pid namespace the setup process itself becomes the container's process:
        its exit status then belongs to the process, not to the setup.
        """
        if pid != setup_pid:
            self.reaper.register(pid, process)
            return setup_done
        if setup_done.done():  # it has already exited (a setup error)
            process.pid = pid
            process.set_exited(setup_done.result())
        else:
            self.reaper.forget(setup_pid)
            self.reaper.register(pid, process)
        return _done()

    def _describe(self, message: dict[str, Any] | None) -> str:
        if message is None:
            return f"container {self.id}: setup process exited without reporting"
        return f"container {self.id}: {message.get('error', 'setup failed')}"

    async def _expect_pid(self, sync: _SyncReader) -> int:
        message = await sync.next()
        if message is None or "error" in message:
            raise ContainerError(FAILED_PRECONDITION, self._describe(message))
        pid = message.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            raise ContainerError(INTERNAL, f"container {self.id}: bad setup message {message}")
        return pid

    async def start(self) -> None:
        if self.status is not Status.CREATED or self._start_fd is None or self._sync is None:
            raise ContainerError(FAILED_PRECONDITION,
                                 f"container {self.id} is {self.status.value}, not created")
        os.write(self._start_fd, b"s")
        os.close(self._start_fd)
        self._start_fd = None
        message = await self._sync.next()
        self._sync.close()
        self._sync = None
        if message is not None and "error" in message:
            assert self.init is not None
            await self.init.wait()
            raise ContainerError(FAILED_PRECONDITION, self._describe(message))
        self.started = True

    async def exec(self, exec_id: str, process_plan: launch.ProcessPlan,
                   console_size: tuple[int, int] | None = None) -> Process:
        if self.status not in (Status.RUNNING, Status.CREATED) or self.init is None:
            raise ContainerError(FAILED_PRECONDITION,
                                 f"container {self.id} is {self.status.value}: cannot exec")
        if exec_id in self.execs and not self.execs[exec_id].exited:
            raise ContainerError(ALREADY_EXISTS,
                                 f"container {self.id} already has a process {exec_id!r}")
        init_pid = self.init.pid
        # every namespace the init has of its own or joined, taken from the init itself
        flags = self.config.init.namespaces
        for flag, _ in self.config.init.join_namespaces:
            flags |= flag
        order = [("user", sc.CLONE_NEWUSER), ("ipc", sc.CLONE_NEWIPC),
                 ("uts", sc.CLONE_NEWUTS), ("cgroup", sc.CLONE_NEWCGROUP),
                 ("pid", sc.CLONE_NEWPID), ("mount", sc.CLONE_NEWNS)]
        namespaces = [(flag, f"/proc/{init_pid}/ns/{sc.NAMESPACE_FILES[name]}")
                      for name, flag in order if flags & flag]
        plan = launch.ExecPlan(init_pid=init_pid,
                               cgroup_procs=str(self.cgroup.path / "cgroup.procs")
                               if self.cgroup else None,
                               namespaces=namespaces, process=process_plan)
        streams = _Streams(process_plan.terminal)
        sync_r, sync_w = os.pipe()

        def body() -> NoReturn:
            os.close(sync_r)
            launch.run_exec(plan, streams.child, sync_w)

        try:
            setup_pid = _fork(body)
        except BaseException:
            streams.close_all()
            os.close(sync_r)
            os.close(sync_w)
            raise
        os.close(sync_w)
        streams.close_child_ends()
        sync = _SyncReader(sync_r)
        process = streams.process(self.id, exec_id)
        setup_done = self.reaper.wait_pid(setup_pid)
        message: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                pid = await self._expect_pid(sync)
                setup_done = self._track(pid, process, setup_pid, setup_done)
                message = await sync.next()
                await setup_done
            if message is not None and "error" in message:
                await process.wait()
                raise ContainerError(FAILED_PRECONDITION,
                                     f"exec {exec_id} in {self.id}: {message['error']}")
            streams.receive_console(process, console_size)
        except BaseException as err:
            with contextlib.suppress(ProcessLookupError):
                process.signal(signal.SIGKILL)
            if not setup_done.done():  # not reaped yet, so the pid is still its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(setup_pid, signal.SIGKILL)
            process.close()
            if isinstance(err, TimeoutError):
                raise ContainerError(INTERNAL, f"exec {exec_id} in {self.id}: setup timed "
                                               "out") from None
            raise
        finally:
            sync.close()
            streams.close_all()
        self.execs[exec_id] = process
        return process

    def signal(self, exec_id: str, sig: int, *, all_processes: bool = False) -> None:
        if all_processes and self.cgroup is not None:
            if sig == signal.SIGKILL or not self.paused:
                self.cgroup.kill_all(sig)
            return
        process = self.process(exec_id)
        if process.exited:
            raise ContainerError(NOT_FOUND,
                                 f"process {exec_id or 'init'} of {self.id} has exited")
        try:
            process.signal(sig)
        except ProcessLookupError:
            raise ContainerError(NOT_FOUND,
                                 f"process {exec_id or 'init'} of {self.id} has exited") from None

    async def pause(self) -> None:
        if self.status is not Status.RUNNING or self.cgroup is None:
            raise ContainerError(FAILED_PRECONDITION,
                                 f"container {self.id} is {self.status.value}, not running")
        await self.cgroup.freeze(True)
        self.paused = True

    async def resume(self) -> None:
        if self.status is not Status.PAUSED or self.cgroup is None:
            raise ContainerError(FAILED_PRECONDITION,
                                 f"container {self.id} is {self.status.value}, not paused")
        await self.cgroup.freeze(False)
        self.paused = False

    def update(self, resources: dict[str, Any]) -> None:
        if self.cgroup is None:
            raise ContainerError(FAILED_PRECONDITION, f"container {self.id} has no cgroup")
        try:
            self.cgroup.apply(resources)
        except (OSError, ValueError) as err:
            raise ContainerError(INVALID_ARGUMENT, f"linux.resources: {err}") from err

    async def destroy(self, timeout: float = 10.0) -> None:
        """Kill every process, release every descriptor and remove the cgroup."""
        if self._start_fd is not None:
            os.close(self._start_fd)  # an init still waiting to start exits on EOF
            self._start_fd = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self.cgroup is not None:
            if self.paused:
                with contextlib.suppress(OSError):
                    self.cgroup.write("cgroup.freeze", "0")
            self.cgroup.kill_all(signal.SIGKILL)
        for process in [self.init, *self.execs.values()]:
            if process is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                process.signal(signal.SIGKILL)
        for process in [self.init, *self.execs.values()]:
            if process is None or not process.pid:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await process.wait()
            process.close()
        if self.cgroup is not None:
            await self.cgroup.remove()
