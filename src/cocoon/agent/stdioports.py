"""Stdio ports: a process's bulk output spliced by the guest kernel into a virtio-serial port.

The VM has ports named `cocoon.stdio.<k>` beside the agent's, each on a unix socket of QEMU's on
the host. When the host binds a stream (`cocoon.GuestAgent` BindStream), its pipe is moved into
a free port with `splice()`: the pipe's pages go to the device without passing through Python.
What each port's driver does shapes this module (each was checked in a spike on this kernel):

- A port can be open only once; every port is opened on first use and stays open.
- While no host is connected a write or splice fails with EAGAIN and `poll` reports POLLHUP
  (epoll would report the hang-up without pause, so it is polled for, as in `channel`). A host
  that hangs up makes QEMU drop what the guest had queued for it.
- `splice` into a port takes the pipe's whole content, however little was asked for: asking for
  less than the pipe holds makes 6.1's virtio_console build a descriptor chain longer than it
  counted (the guest kernel oopses). So every splice asks for more than any pipe can hold.
- An empty pipe splices 0 bytes, as end of file does: `poll` on the pipe tells them apart.
- Back-pressure: QEMU stops taking buffers while its socket is full; the port's queue (128
  entries, each one splice of up to `PIPE_SIZE`) then fills, splice fails with EAGAIN, the pipe
  fills and the container's writer blocks. At most 128 * PIPE_SIZE are in flight per port.

A binding's host proves itself first: it writes the binding's 16-byte token into the port, and
nothing is sent until the agent has read it, so a host that connects late (its binding over and
the port bound again) gets nothing of another stream. A host that hangs up before the end (a
relay killed) ends the binding: the pipe is closed, and the container's writer gets EPIPE as
from a pipe whose reader went away. A port is free again once its stream ended (end of file
spliced, the host gone, or the process closed) and no host is connected.

A process's stdin can be bound to a port too (`cocoon.agent.stdinport`): the same ports, the
same token, the other direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import select
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.agent.portwait import HOST_POLL, TOKEN_SIZE, await_token, events, ready
from cocoon.agent.process import Reaper
from cocoon.agent.stdinport import StdinBinding
from cocoon.agent.stdio import InputStream, OutputStream

logger = logging.getLogger("cocoon.agent.stdioports")

PORT_PREFIX = "cocoon.stdio."
PORTS_DIR = Path("/sys/class/virtio-ports")
F_SETPIPE_SZ = 1031
PIPE_SIZE = 256 << 10  # 64 KiB moved 75 MB/s in the spike, 256 KiB 150-210, 1 MiB 150-190
SPLICE_LEN = 1 << 30  # more than any pipe holds (see the module docstring)


def find_ports(ports_dir: Path = PORTS_DIR) -> dict[int, Path]:
    """The /dev nodes of the stdio ports by index (no udev in the guest)."""
    found: dict[int, Path] = {}
    if not ports_dir.is_dir():
        return found
    for entry in sorted(ports_dir.iterdir()):
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            continue
        index = name.removeprefix(PORT_PREFIX)
        if name.startswith(PORT_PREFIX) and index.isdigit():
            found[int(index)] = Path("/dev") / entry.name
    return found


class HostGone(Exception):
    """The binding's host hung up before the stream ended: nobody reads the rest."""


@dataclass(eq=False)
class Binding:
    """One stream moving into one port."""

    port: int
    port_fd: int
    pipe: int | None
    pending: bytes  # what the stream had buffered before it was bound
    token: bytes = field(default_factory=lambda: secrets.token_bytes(TOKEN_SIZE))
    written: int = 0
    connected: bool = False  # the binding's host has proven itself
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            await self._await_host()
            await self._send_pending()
            if self.pipe is not None:
                with contextlib.suppress(OSError):
                    fcntl.fcntl(self.pipe, F_SETPIPE_SZ, PIPE_SIZE)
                await self._splice()
        except HostGone:
            logger.info("stdio port %d: the host hung up after %d bytes", self.port,
                        self.written)
        except OSError as err:
            logger.warning("stdio port %d: %s", self.port, err)
        finally:
            self.close_pipe()
            self.ended.set()

    def close_pipe(self) -> None:
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self.pipe)
            self.pipe = None

    async def _await_host(self) -> None:
        await await_token(self.port_fd, self.token)
        self.connected = True

    async def _writable(self) -> None:
        while True:
            seen = events(self.port_fd)
            if seen & select.POLLOUT:
                return
            if seen & select.POLLHUP:
                raise HostGone()
            else:
                await ready(self.port_fd, write=True)

    async def _send_pending(self) -> None:
        view = memoryview(self.pending)
        while view:
            try:
                sent = os.write(self.port_fd, view)
            except BlockingIOError:
                await self._writable()
                continue
            view = view[sent:]
            self.written += sent
        self.pending = b""

    async def _splice(self) -> None:
        assert self.pipe is not None
        while True:
            try:
                moved = os.splice(self.pipe, self.port_fd, SPLICE_LEN)
            except BlockingIOError:
                await self._writable()
                continue
            if moved:
                self.written += moved
                continue
            seen = events(self.pipe)
            if seen & select.POLLIN:
                continue  # data arrived after the splice looked
            if seen & select.POLLHUP:
                return  # end of file, everything moved
            await ready(self.pipe, write=False)


class StdioPorts:
    """The stdio ports of this VM: their descriptors, which are free, which stream has which."""

    def __init__(self, ports_dir: Path = PORTS_DIR) -> None:
        self.ports_dir = ports_dir
        self._devices: dict[int, Path] | None = None
        self._fds: dict[int, int] = {}
        self._busy: dict[int, Binding | StdinBinding] = {}
        # a stream's binding outlives the port's (StreamEnd may come after the port is free)
        self._by_stream: weakref.WeakKeyDictionary[OutputStream, Binding] = \
            weakref.WeakKeyDictionary()
        self._by_stdin: weakref.WeakKeyDictionary[InputStream, StdinBinding] = \
            weakref.WeakKeyDictionary()

    def _free(self) -> list[int]:
        if self._devices is None:
            self._devices = find_ports(self.ports_dir)
            logger.info("stdio ports: %d", len(self._devices))
        return [k for k in sorted(self._devices) if k not in self._busy]

    def _open(self, index: int) -> int | None:
        fd = self._fds.get(index)
        if fd is None:
            assert self._devices is not None
            try:
                fd = os.open(self._devices[index],
                             os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            except OSError as err:
                logger.warning("stdio port %d: %s", index, err)
                return None
            self._fds[index] = fd
        return fd

    def bind(self, stream: OutputStream) -> Binding | None:
        """Move `stream` into a free port; None if none is free (the stream stays as it is)."""
        if stream.is_pty or stream.detached:
            raise ValueError("a terminal's stream or a stream already bound")
        for index in self._free():
            fd = self._open(index)
            if fd is None:
                continue
            binding = Binding(index, fd, None, b"")
            binding.pipe, binding.pending = stream.detach(lambda: self.release(stream))
            self._busy[index] = binding
            self._by_stream[stream] = binding
            binding.task = asyncio.get_running_loop().create_task(self._serve(binding))
            return binding
        return None

    def binding(self, stream: OutputStream) -> Binding | None:
        return self._by_stream.get(stream)

    async def bind_stdin(self, stream: InputStream, reaper: Reaper) -> StdinBinding | None:
        """Feed `stream` from a free port (`cocoon.agent.stdinport`); None if none is free."""
        if stream.detached:
            raise ValueError("a stdin already bound")
        for index in self._free():
            fd = self._open(index)
            if fd is None:
                continue
            binding = StdinBinding(index, fd, None, reaper)
            self._busy[index] = binding  # taken before the wait below
            try:
                binding.pipe = await stream.detach(binding.stop)
            except BaseException:
                self._busy.pop(index, None)
                raise
            self._by_stdin[stream] = binding
            binding.task = asyncio.get_running_loop().create_task(self._serve(binding))
            return binding
        return None

    def stdin_binding(self, stream: InputStream) -> StdinBinding | None:
        return self._by_stdin.get(stream)

    def release(self, stream: OutputStream) -> None:
        """The process is gone: stop moving its stream (the port frees once the host left)."""
        binding = self._by_stream.get(stream)
        if binding is not None and not binding.ended.is_set():
            binding.close_pipe()
            binding.ended.set()
            if binding.task is not None:
                binding.task.cancel()

    async def _serve(self, binding: Binding | StdinBinding) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await binding.run()
            binding.close_pipe()
            binding.ended.set()
            # a host still connected may be reading the last bytes, or be the binding's
            while not events(binding.port_fd) & select.POLLHUP:
                await asyncio.sleep(HOST_POLL * 5)
        finally:
            self._busy.pop(binding.port, None)
