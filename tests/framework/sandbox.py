"""`Sandbox`: one real sandbox (monitor, QEMU, virtiofsd, agent) booted for a test.

It is booted through the same path the runtime uses (`cocoon.sandbox.launcher.start_sandbox`), in
the VM root the test runs with (`COCOON_VM_DIR`; the `sandboxes` fixture makes it private to
the test), and always stopped: `stop()` asks the monitor to shut down and falls back to killing
it and removing its directory, and is safe to call after the sandbox died on its own.

The monitor removes its directory, logs included, when it stops. So that a test can still read
what the monitor and the guest wrote after a crash, `Sandbox` opens both logs as soon as the
sandbox is up and reads them through those descriptors (the text outlives the unlink).

    with Sandbox.boot("t1") as sb:
        async def scenario() -> None:
            client = await sb.client()
            assert await client.agent.health()
        asyncio.run(scenario())
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from cocoon.errors import CocoonError
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.launcher import SandboxHandle, start_sandbox, stop_sandbox_async
from cocoon.sandbox.layout import Layout, SandboxConfig, vm_dir_for

OWNER = "cocoon-tests"
BOOT_TIMEOUT = 120.0  # TCG boots in about 6 s; the two cores may be shared with other suites


@dataclass(frozen=True)
class SandboxPids:
    """The host processes of one sandbox, as its monitor reported them while it ran."""

    monitor: int
    qemu: int
    virtiofsd: int

    def all(self) -> tuple[int, ...]:
        return tuple(p for p in (self.monitor, self.qemu, self.virtiofsd) if p)


class Sandbox:
    """A booted sandbox; see the module docstring. Make one with `Sandbox.boot`."""

    def __init__(self, config: SandboxConfig, handle: SandboxHandle) -> None:
        self.config = config
        self.handle = handle
        self._logs: dict[str, BinaryIO] = {}
        self._clients: list[SandboxClient] = []
        self.stopped = False
        for name, path in (("monitor", self.layout.monitor_log),
                           ("console", self.layout.console_log)):
            with contextlib.suppress(OSError):
                self._logs[name] = path.open("rb")

    @classmethod
    def boot(cls, sandbox_id: str, *, boot_timeout: float = BOOT_TIMEOUT,
             **overrides: Any) -> Sandbox:
        """Start a sandbox (blocking) with `SandboxConfig` fields overridden as given.

        Raises what `start_sandbox` raises (SandboxError with the one-line reason); nothing is
        left behind in that case.
        """
        config = SandboxConfig(sandbox_id=sandbox_id,
                               vm_dir=str(vm_dir_for(OWNER, sandbox_id)),
                               boot_timeout=boot_timeout, **overrides)
        return cls(config, start_sandbox(config))

    # --- what the sandbox is ---------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        return self.config.layout

    @property
    def info(self) -> dict[str, Any]:
        """The monitor's readiness report (pids, kernel release, accel, phases)."""
        return self.handle.info

    @property
    def phases(self) -> dict[str, float]:
        phases: dict[str, float] = self.handle.info.get("phases", {})
        return phases

    @property
    def monitor_pid(self) -> int:
        return self.handle.monitor_pid

    async def pids(self) -> SandboxPids:
        client = await self.client()
        status = await client.status()
        return SandboxPids(status.monitor_pid, status.qemu_pid, status.virtiofsd_pid)

    def monitor_log(self) -> str:
        return self._read_log("monitor")

    def console_log(self) -> str:
        return self._read_log("console")

    def _read_log(self, name: str) -> str:
        f = self._logs.get(name)
        if f is None:
            return ""
        f.seek(0)
        return f.read().decode(errors="replace")

    # --- talking to it ---------------------------------------------------------------------------

    async def client(self, timeout: float = 10.0) -> SandboxClient:
        """A new connection to the monitor; closed by `stop()` if the test does not close it.

        Connections belong to the event loop they were made in: make them inside the test's
        `asyncio.run`, and close them there (or let `stop_async` in the same loop do it).
        """
        client = await SandboxClient.connect(self.layout.monitor_socket, timeout=timeout)
        self._clients.append(client)
        return client

    def kill_qemu(self, qemu_pid: int) -> None:
        """SIGKILL the sandbox's QEMU, as a crash would."""
        os.kill(qemu_pid, signal.SIGKILL)

    # --- stopping --------------------------------------------------------------------------------

    async def close_clients(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(CocoonError, OSError, RuntimeError):
                await client.close()

    async def stop_async(self, grace: float = 3.0) -> None:
        """Shut the sandbox down and remove its traces; idempotent, never raises for a dead one."""
        await self.close_clients()
        if not self.stopped:
            self.stopped = True
            await stop_sandbox_async(self.layout, grace)

    def stop(self, grace: float = 3.0) -> None:
        """`stop_async` from synchronous code (no event loop may be running)."""
        # clients made in a loop that has finished cannot be closed from here; dropping them
        # is safe: their sockets close with the monitor
        self._clients = []
        if not self.stopped:
            asyncio.run(self.stop_async(grace))
        for f in self._logs.values():
            f.close()
        self._logs = {}

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Sandboxes:
    """The `sandboxes` fixture: boots sandboxes on demand and stops every one at the end."""

    def __init__(self) -> None:
        self.booted: list[Sandbox] = []

    def boot(self, sandbox_id: str, **overrides: Any) -> Sandbox:
        sandbox = Sandbox.boot(sandbox_id, **overrides)
        self.booted.append(sandbox)
        return sandbox

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for sandbox in self.booted:
            try:
                sandbox.stop()
            except Exception as err:  # stop the others before reporting
                errors.append(err)
        self.booted = []
        if errors:
            raise errors[0]

    def __iter__(self) -> Iterator[Sandbox]:
        return iter(self.booted)


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def wait_gone(pids: tuple[int, ...], timeout: float) -> list[int]:
    """Wait until none of `pids` runs; return those still running after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or loop.time() >= deadline:
            return alive
        await asyncio.sleep(0.05)


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (virtiofsd forks once into its namespaces)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), \
                    open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    return found


def path_gone(path: Path) -> bool:
    return not os.path.lexists(path)
