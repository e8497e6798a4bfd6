"""The debug console: an interactive shell in the guest, outside every container, on a
virtio-serial port of its own (`cocoon.debug`), served only once the host enabled it.

While no host is connected to the port's socket, `poll` on the port reports POLLHUP (see
`cocoon.agent.channel`), so the console polls until a host arrives, then runs busybox's shell
on a new terminal with the agent's root, namespaces and credentials, and copies bytes both ways
until the shell exits (the host is then sent END, an escape sequence no shell prints) or the host
leaves (the shell's session is hung up and killed). Then it waits for the next host.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import subprocess
import termios

from cocoon.agent.channel import find_port
from cocoon.linux.consolewire import END, PORT_NAME

logger = logging.getLogger("cocoon.agent.debugconsole")

SHELL = ["/bin/busybox", "sh", "-i"]
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "TERM": "xterm", "HOME": "/", "PS1": "cocoon-guest# "}
CHUNK = 64 << 10
HOST_POLL = 0.2


class DebugConsole:
    def __init__(self, port_name: str = PORT_NAME) -> None:
        self.port_name = port_name
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._task is not None

    def enable(self) -> None:
        """Start serving (once); raises FileNotFoundError when the VM has no such port."""
        if self._task is None:
            port = find_port(self.port_name, timeout=0)
            fd = os.open(port, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._task = asyncio.get_running_loop().create_task(self._serve(fd),
                                                                name="debug console")
            logger.warning("debug console enabled on %s", port)

    async def _serve(self, port: int) -> None:
        while True:
            await _host_connected(port)
            logger.warning("debug console: a host connected; starting a shell")
            try:
                await _session(port)
            except OSError as err:
                logger.warning("debug console session failed: %s", err)
            logger.warning("debug console: session over")
            await asyncio.sleep(HOST_POLL)


async def _host_connected(port: int) -> None:
    poller = select.poll()
    poller.register(port, select.POLLIN | select.POLLHUP)
    while any(event & select.POLLHUP for _, event in poller.poll(0)):
        await asyncio.sleep(HOST_POLL)


def _controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _session(port: int) -> None:
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    try:
        shell = subprocess.Popen(SHELL, stdin=slave, stdout=slave, stderr=slave, env=ENV,
                                 cwd="/", close_fds=True, preexec_fn=_controlling_terminal)
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    done = loop.create_future()

    def finish(reason: str) -> None:
        if not done.done():
            done.set_result(reason)

    def from_host() -> None:
        try:
            data = os.read(port, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            finish("host left")
            return
        with contextlib.suppress(BlockingIOError):
            os.write(master, data)  # a terminal's input queue full: keystrokes are dropped

    def from_shell() -> None:
        try:
            data = os.read(master, CHUNK)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:
                raise
            data = b""  # every slave end closed: the shell is gone
        if not data:
            finish("shell exited")
            return
        _write_all(port, data)

    loop.add_reader(port, from_host)
    loop.add_reader(master, from_shell)
    try:
        reason = await done
    finally:
        loop.remove_reader(port)
        loop.remove_reader(master)
    if reason == "shell exited":
        _write_all(port, END)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGHUP)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGKILL)
    await asyncio.to_thread(shell.wait)
    os.close(master)


def _write_all(fd: int, data: bytes) -> None:
    """Blocking in small waits: the port takes bytes once the host reads them."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except OSError:
            return  # the host left: the session ends on its next read
