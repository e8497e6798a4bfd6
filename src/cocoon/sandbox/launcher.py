"""Starting and stopping a sandbox monitor from a short-lived caller (the CLI, tests, benches).

The monitor runs detached (its own session, stdio on /dev/null) so the caller can exit; it
reports readiness, or the one-line reason it could not start, on a pipe the caller reads.
Stopping asks the monitor to shut down; a monitor that no longer answers is killed and its
sandbox directory cleaned up here, so nothing is left behind either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocoon import network
from cocoon.errors import CocoonError, SandboxError
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout, SandboxConfig
from cocoon.sandbox.share import remove_vm_dir

READY_LIMIT = 64 * 1024


@dataclass
class SandboxHandle:
    config: SandboxConfig
    monitor_pid: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return self.config.layout

    async def connect(self, timeout: float = 5.0) -> SandboxClient:
        return await SandboxClient.connect(self.layout.monitor_socket, timeout=timeout)


def spawn_monitor(config: SandboxConfig, pool: str | None = None,
                  nice: int = 0) -> tuple[int, int]:
    """Start the monitor detached; return its pid and the read end of its readiness pipe.

    With `pool` (a template name) the monitor becomes a member of the warm pool
    (`cocoon.sandbox.pool`): it reports nothing, and the returned fd is -1. `nice` lowers its
    CPU priority (and its QEMU's and virtiofsd's, which inherit it).
    """
    layout = config.layout
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    layout.qemu_dir.mkdir(exist_ok=True, mode=0o700)
    config.save()
    argv = [sys.executable, "-m", "cocoon.sandbox.monitor", str(layout.root)]
    read_fd = write_fd = -1
    if pool is None:
        read_fd, write_fd = os.pipe()
        argv += ["--ready-fd", str(write_fd)]
    else:
        argv += ["--pool", pool]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(write_fd,) if write_fd >= 0 else (),
            start_new_session=True, close_fds=True,
            preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)) if nice else None)
    except OSError:
        if read_fd >= 0:
            os.close(read_fd)
        raise
    finally:
        if write_fd >= 0:
            os.close(write_fd)
    layout.pidfile.write_text(str(proc.pid))
    # the monitor outlives us; it is reaped by whoever adopts it
    proc.returncode = 0
    return proc.pid, read_fd


def _read_ready(fd: int, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while len(data) < READY_LIMIT:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data.strip():
        return {"ok": False, "error": "the sandbox monitor exited without a word"}
    try:
        message: dict[str, Any] = json.loads(data.splitlines()[0])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"the sandbox monitor said {data[:200]!r}"}
    return message


def start_sandbox(config: SandboxConfig, timeout: float | None = None,
                  on_vm_dir: Callable[[Path], None] | None = None) -> SandboxHandle:
    """Boot a sandbox and wait until its agent answers (blocking).

    However the wait ends short of a ready sandbox (a failure, the timeout, or the caller being
    interrupted by a signal), nothing of the sandbox is left running or mounted. `on_vm_dir`
    is told the sandbox's directory before anything starts in it when that is not
    `config.vm_dir` (a pooled clone's), so that a caller killed meanwhile leaves a record of
    where its sandbox is.
    """
    from cocoon.sandbox import pool

    if pool.size() > 0:
        pooled = pool.start_from_pool(config, on_vm_dir)
        if pooled is not None:
            claimed, info = pooled
            return SandboxHandle(claimed, int(info.get("monitor_pid") or 0), info)
        if on_vm_dir is not None:
            on_vm_dir(config.layout.root)  # a member was perhaps tried: back to our own
    handle = _start_monitor(config, timeout)
    if pool.size() > 0:
        pool.refill_for(config)
    return handle


def _start_monitor(config: SandboxConfig, timeout: float | None) -> SandboxHandle:
    wait = timeout if timeout is not None else config.boot_timeout + 30.0
    pid, read_fd = spawn_monitor(config)
    try:
        message = _read_ready(read_fd, wait)
    except BaseException:
        sweep(config.layout.root, monitor=pid)
        raise
    if message is None:
        sweep(config.layout.root, monitor=pid)
        raise SandboxError(f"sandbox {config.sandbox_id}: not ready after {wait:.0f} s")
    if not message.get("ok"):
        _reap_quietly(pid)
        sweep(config.layout.root)
        raise SandboxError(str(message.get("error") or "the sandbox failed to start"),
                           sandbox=config.sandbox_id)
    return SandboxHandle(config, pid, message)


SHIM_MODULE = b"cocoon.runtime.shimproc"


def sandbox_processes(vm_dir: Path, shims: bool = True) -> list[int]:
    """Processes whose command line names the sandbox directory: its monitor, QEMU, virtiofsd,
    and (unless `shims` is false) the per-process shims of its containers.

    The directory is the one thing they all carry, so this finds them even when the monitor's
    pid file went with a directory someone removed.
    """
    root = str(vm_dir).rstrip("/").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if not shims and SHIM_MODULE in args:
            continue
        if any(arg == root or arg.startswith(root + b"/") or (b"=" + root + b"/") in arg
               for arg in args):
            found.append(int(entry))
    return found


def sweep(vm_dir: Path, monitor: int | None = None, timeout: float = 5.0) -> None:
    """Kill whatever still runs for a sandbox, then unmount and remove its directory."""
    if monitor is not None:
        kill_monitor(monitor)
    pids = sandbox_processes(vm_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if pids:
            time.sleep(0.01)
    remove_vm_dir(vm_dir)


def kill_monitor(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap_quietly(pid)


def _reap_quietly(pid: int, timeout: float = 5.0) -> None:
    """Wait for a monitor that is our child to exit (it is not when we merely found it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            if not _alive(pid):
                return
            time.sleep(0.01)
            continue
        if done:
            return
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def monitor_pid(layout: Layout) -> int | None:
    """The monitor's pid from its pid file, if that pid is still a process naming this
    sandbox's directory: a dead monitor's pid may be anyone's by now, and is not signalled.
    (A monitor that is our own exited child is reaped here.)"""
    try:
        pid = int(layout.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid in sandbox_processes(layout.root, shims=False):
        return pid
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return None


async def stop_sandbox_async(layout: Layout, grace: float = 3.0) -> None:
    """Shut the sandbox down; clean up by force when its monitor does not answer."""
    pid = monitor_pid(layout)
    leftovers = network.read_leftovers(layout.network_record)
    answered = False
    if layout.monitor_socket.exists():
        try:
            client = await SandboxClient.connect(layout.monitor_socket, timeout=2.0)
            try:
                await client.shutdown(grace=grace, timeout=grace + 15.0)
                answered = True
            finally:
                await client.close()
        except (CocoonError, OSError):
            pass
    if pid is not None:
        deadline = time.monotonic() + 5.0
        while _alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if _alive(pid):
            kill_monitor(pid)
        else:
            _reap_quietly(pid, timeout=0.1)
    sweep(layout.root)
    if leftovers is not None and not answered:
        # the monitor died before it could take its redirects off the engine's veth: left
        # there, they send the namespace's traffic to a tap that is gone
        await asyncio.to_thread(network.remove_leftovers, leftovers)


def stop_sandbox(layout: Layout, grace: float = 3.0) -> None:
    asyncio.run(stop_sandbox_async(layout, grace))


__all__ = ["SandboxHandle", "start_sandbox", "stop_sandbox", "stop_sandbox_async"]

