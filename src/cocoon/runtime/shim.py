"""The per-process shim: the host process an engine waits on for one guest process.

`spawn()` forks it off the calling CLI; the CLI then exits and the shim is adopted by the
engine's subreaper (conmon, containerd-shim-runc-v2), which waits for it and takes its exit
status as the container's. The shim keeps the caller's stdio (or a host pty for a terminal),
joins the container's network namespace so that engine hooks and tools looking at
/proc/<pid>/ns/net find the container's, and relays until the guest process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import termios
from dataclasses import dataclass
from pathlib import Path

from cocoon import log
from cocoon.errors import CocoonError
from cocoon.linux import syscalls as sc
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.relay import ProcessRelay, Stdio, exit_like

logger = logging.getLogger("cocoon.runtime.shim")

LOST_STATUS = 137
SLEEP = "/bin/sleep"  # the VM is gone: the process is as dead as a SIGKILL makes it


@dataclass(frozen=True)
class ShimSpec:
    monitor_socket: Path
    container_id: str
    exec_id: str = ""
    console: int | None = None     # a host pty slave to use as stdio and controlling tty
    netns: str | None = None       # "new", a path to join, or None for the caller's
    log_path: Path | None = None


def _enter_netns(netns: str | None) -> None:
    if netns is None:
        return
    if netns == "new":
        sc.unshare(sc.CLONE_NEWNET)
        return
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, sc.CLONE_NEWNET)
    finally:
        os.close(fd)


PLACEHOLDER_TITLE = "[the container runs in its VM: podman top CTR -o pid,args lists it]"


def _hide_host_processes() -> None:
    """Give the shim a /proc that shows one placeholder instead of every host process.

    Engines inspect a container through the host pid they were given: podman top joins that
    pid's mount namespace and reads /proc. The shim stands in for a guest process, so it gets
    its own mount namespace whose /proc belongs to a fresh pid namespace holding one sleeping
    placeholder (dying with the shim) whose command line says where the processes are.
    """
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWPID)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    pid = os.fork()
    if pid == 0:
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            os.closerange(3, 65536)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execv(SLEEP, [PLACEHOLDER_TITLE, "infinity"])
        finally:
            os._exit(0)


def _take_console(slave: int) -> None:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)


async def relay(spec: ShimSpec, stdio: Stdio) -> int:
    try:
        client = await SandboxClient.connect(spec.monitor_socket, timeout=10.0)
    except CocoonError as err:
        logger.error("shim %s/%s: %s", spec.container_id, spec.exec_id or "init", err)
        return LOST_STATUS
    try:
        return await ProcessRelay(client, spec.container_id, spec.exec_id, stdio).run()
    except CocoonError as err:
        logger.warning("shim %s/%s: %s", spec.container_id, spec.exec_id or "init", err)
        return LOST_STATUS
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def _child(spec: ShimSpec) -> int:
    # the caller's log handlers write to descriptors about to be closed: drop them unclosed
    cocoon_logger = logging.getLogger("cocoon")
    for handler in list(cocoon_logger.handlers):
        cocoon_logger.removeHandler(handler)
    if spec.console is not None:
        _take_console(spec.console)
    os.closerange(3, 65536)
    log.setup("INFO", path=str(spec.log_path) if spec.log_path else os.devnull)
    try:
        _hide_host_processes()
    except OSError as err:
        logger.warning("shim %s: cannot hide host processes: %s", spec.container_id, err)
    _enter_netns(spec.netns)
    terminal = spec.console is not None
    stdio = Stdio(stdin=0, stdout=1, stderr=None if terminal else 2, terminal=terminal,
                  tty_fd=0 if terminal else None)
    return asyncio.run(relay(spec, stdio))


def spawn(spec: ShimSpec) -> int:
    """Fork the shim; return its pid. The caller must not wait for it."""
    pid = os.fork()
    if pid:
        return pid
    code = 255
    try:
        code = _child(spec)
    except BaseException:  # the child must never return into the caller's code
        with contextlib.suppress(Exception):
            logger.exception("shim %s failed", spec.container_id)
    finally:
        exit_like(code)
