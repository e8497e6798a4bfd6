"""The sandbox monitor: one long-lived host process per VM.

It owns QEMU (and QMP), virtiofsd and the agent channel, and serves local clients on a unix
socket (mode 0600), multiplexing their calls onto the channel (the proxy). It tells whoever
started it that the sandbox is ready (or why not) on an inherited pipe, then lives until it is
asked to shut down, is signalled, or QEMU exits; in every case it removes everything the sandbox
made on the host before it exits.

    python -m cocoon.sandbox.monitor VM_DIR [--ready-fd N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from cocoon import log, network
from cocoon.errors import CocoonError, RPCError, SandboxError
from cocoon.guest import assets
from cocoon.hypervisor import accel as accel_mod
from cocoon.hypervisor.config import MemoryBackend, VirtioFsShare, VMConfig
from cocoon.hypervisor.qemu import QemuVM, describe_exit
from cocoon.protocols.gen import agent_pb2, monitor_pb2
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import SandboxConfig
from cocoon.sandbox.proxy import AgentProxy
from cocoon.sandbox.share import GUEST_MOUNTPOINT, VIRTIOFS_TAG, Share, remove_vm_dir
from cocoon.sandbox.virtiofsd import Virtiofsd
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.sandbox.monitor")

MAX_AGENT_FAILURES = 3   # protocol errors from the guest before the sandbox is given up
DESTROY_GRACE = 3.0      # seconds for the guest to power off after DestroySandbox


class Monitor:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.layout = config.layout
        self.id = config.sandbox_id
        self.vm: QemuVM | None = None
        self.virtiofsd: Virtiofsd | None = None
        self.share: Share | None = None
        self.network: network.NetworkAttachment | None = None
        self.proxy = AgentProxy(self.id, local=self._local)
        self.server: asyncio.AbstractServer | None = None
        self.client: SandboxClient | None = None
        self.state = "booting"
        self.accel = ""
        self.details: agent_pb2.GuestDetailsResponse | None = None
        self.phases: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._torn_down = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    # --- phases ------------------------------------------------------------------------------

    def mark(self, phase: str, at: float | None = None) -> None:
        seconds = (time.monotonic() if at is None else at) - self.t0
        self.phases[phase] = seconds
        logger.info("sandbox %s: %s at %.3f s", self.id, phase, seconds)

    # --- start -------------------------------------------------------------------------------

    async def boot(self) -> None:
        layout = self.layout
        kernel, initrd = await asyncio.to_thread(self._boot_files)
        decision = await accel_mod.choose_accel_async(
            cache_dir=Path(self.config.asset_dir) if self.config.asset_dir else None)
        self.accel = decision.accel
        shares: tuple[VirtioFsShare, ...] = ()
        backend = None
        if self.config.share:
            self.share = Share(layout.shared)
            self.share.create()
            self.virtiofsd = Virtiofsd(layout.virtiofs_socket, layout.shared,
                                       layout.root / "virtiofsd.log")
            await self.virtiofsd.start()
            shares = (VirtioFsShare(VIRTIOFS_TAG, layout.virtiofs_socket),)
            backend = MemoryBackend("memfd", share=True)
        # the container's network namespace: taps and tc redirects before QEMU gets the taps
        self.network = await asyncio.to_thread(network.attach, self.config.netns)
        args = list(self.config.kernel_args)
        if self.config.debug:
            args.append("COCOON_AGENT_LOG=DEBUG")
        vm_config = VMConfig(
            name=f"cocoon-{layout.root.name}",
            kernel=kernel, initrd=initrd, kernel_args=tuple(args),
            qmp_socket=layout.qmp_socket, console_log=layout.console_log,
            memory_mib=self.config.memory_mib, vcpus=self.config.vcpus,
            accel=decision.accel, cpu_model=decision.cpu_model,
            machine=self.config.machine,  # type: ignore[arg-type]
            agent_socket=layout.agent_socket, memory_backend=backend, shares=shares,
            nics=self.network.nics if self.network else ())
        self.t0 = time.monotonic()
        self.vm = QemuVM(vm_config)
        await self.vm.start()
        if self.network is not None:
            self.network.close_fds()  # QEMU holds the taps now: they die with it
        self.mark("qemu started", self.t0)
        self._tasks.append(asyncio.create_task(self._watch_qemu(), name="watch-qemu"))
        self._tasks.append(asyncio.create_task(self._agent_loop(), name="agent-channel"))
        self.server = await asyncio.start_unix_server(self.proxy.serve_client,
                                                      path=str(layout.monitor_socket))
        os.chmod(layout.monitor_socket, 0o600)
        self.client = await self._internal_client()
        await self._wait_for_agent()
        storages = []
        if self.config.share:
            storages.append(agent_pb2.Storage(driver="virtio-fs", source=VIRTIOFS_TAG,
                                              fstype="virtiofs", mount_point=GUEST_MOUNTPOINT))
        await self.client.agent("CreateSandbox", agent_pb2.CreateSandboxRequest(
            hostname=self.config.hostname, storages=storages, sandbox_id=self.id),
            empty_pb2.Empty)
        self.mark("sandbox created")
        if self.network is not None:
            await self.network.configure_guest(self.client)
            self.mark("network configured")
        self.state = "running"

    def _boot_files(self) -> tuple[Path, Path]:
        """The kernel and initrd to boot: the agent's image, or the configured variant."""
        cache = Path(self.config.asset_dir) if self.config.asset_dir else None
        if self.config.initrd:
            kernel = assets.find_kernel(cache) or assets.ensure_kernel(cache)
            return kernel.vmlinuz, Path(self.config.initrd)
        image = assets.find_guest_image(cache) or assets.ensure_guest_image(cache)
        return image.kernel.vmlinuz, image.initrd

    async def _internal_client(self) -> SandboxClient:
        """The monitor's own calls go through its proxy like everyone else's."""
        mine, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        self._tasks.append(asyncio.create_task(self.proxy.serve_client(reader, writer),
                                               name="internal-client"))
        r, w = await asyncio.open_unix_connection(sock=mine)
        return SandboxClient.over(r, w, peer=f"sandbox {self.id}")

    async def _wait_for_agent(self) -> None:
        assert self.client is not None and self.vm is not None
        deadline = time.monotonic() + self.config.boot_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(
                    f"sandbox {self.id}: the agent did not answer within "
                    f"{self.config.boot_timeout:.0f} s (console: {self._console_hint()})")
            if self.stop_reason:
                raise SandboxError(f"sandbox {self.id}: {self.stop_reason} "
                                   f"(console: {self._console_hint()})")
            try:
                await self.client.health(timeout=min(remaining, 5.0))
                break
            except RPCError as err:
                if err.code not in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED):
                    raise
                await asyncio.sleep(0.02)
        ready_host = time.monotonic()
        self.details = await self.client.guest_details(timeout=5.0)
        uptime = self.details.uptime_ns / 1e9
        kernel_start = ready_host - uptime
        self.mark("kernel started", kernel_start)
        self.mark("agent started", kernel_start + self.details.agent_started_ns / 1e9)
        self.mark("agent ready", kernel_start + self.details.agent_ready_ns / 1e9)
        self.mark("health answered", ready_host)

    def _console_hint(self) -> str:
        if self.vm is None:
            return "no VM"
        tail = [line for line in self.vm.console_tail(5) if line.strip()]
        return " | ".join(tail[-3:]) or f"empty, see {self.layout.console_log}"

    # --- running -----------------------------------------------------------------------------

    async def _agent_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self.layout.agent_socket), limit=8 << 20)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            reason = await self.proxy.run_agent(reader, writer)
            if self.vm is not None and await _exited_within(self.vm, 0.5):
                reason = self._qemu_reason()
            await self.proxy.fail_pending(reason)
            if self._stop.is_set() or (self.vm is not None and not self.vm.running):
                return
            if "protocol error" in reason:
                failures += 1
                if failures >= MAX_AGENT_FAILURES:
                    self.request_stop(f"the guest broke the agent protocol {failures} times")
                    return
            await asyncio.sleep(0.05)

    def _qemu_reason(self) -> str:
        assert self.vm is not None
        return f"the VM exited ({describe_exit(self.vm.returncode)})"

    async def _watch_qemu(self) -> None:
        assert self.vm is not None
        with contextlib.suppress(CocoonError):
            await self.vm.wait()
        if not self._stop.is_set():
            reason = self._qemu_reason()
            logger.warning("sandbox %s: %s", self.id, reason)
            await self.proxy.fail_pending(reason)
            self.request_stop(reason)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    async def _local(self, method: str, payload: bytes) -> bytes:
        if method == "Status":
            return self._status().SerializeToString()
        if method == "Shutdown":
            request = monitor_pb2.ShutdownRequest.FromString(payload)
            self.request_stop("shutdown requested")
            await self.teardown(grace=request.grace_seconds or DESTROY_GRACE)
            return monitor_pb2.ShutdownResponse(reason=self.stop_reason or "").SerializeToString()
        raise RPCError(StatusCode.UNIMPLEMENTED, f"cocoon.Monitor has no method {method}")

    def _status(self) -> monitor_pb2.StatusResponse:
        return monitor_pb2.StatusResponse(
            sandbox_id=self.id, monitor_pid=os.getpid(),
            qemu_pid=(self.vm.pid or 0) if self.vm else 0, state=self.state,
            phases=[monitor_pb2.Phase(name=k, seconds=v) for k, v in self.phases.items()],
            accel=self.accel,
            kernel_release=self.details.kernel_release if self.details else "",
            boot_id=self.details.boot_id if self.details else "",
            console_log=str(self.layout.console_log),
            virtiofsd_pid=(self.virtiofsd.pid or 0) if self.virtiofsd else 0)

    # --- stop --------------------------------------------------------------------------------

    async def teardown(self, grace: float = DESTROY_GRACE) -> None:
        """Stop the VM and remove every trace of the sandbox; safe to call more than once."""
        if self.state == "stopping":
            await self._torn_down.wait()
            return
        self.state = "stopping"
        self._stop.set()
        try:
            if self.server is not None:
                self.server.close()
            vm = self.vm
            if vm is not None and vm.running and self.proxy.connected.is_set() and self.client:
                with contextlib.suppress(CocoonError, OSError):
                    await self.client.agent("DestroySandbox", agent_pb2.DestroySandboxRequest(),
                                            empty_pb2.Empty, timeout=grace)
                await _exited_within(vm, grace)
            if vm is not None:
                with contextlib.suppress(CocoonError, OSError):
                    await vm.stop(grace=0)
            if self.network is not None:
                with contextlib.suppress(CocoonError):
                    await asyncio.to_thread(self.network.detach)
            await self.proxy.fail_pending(self.stop_reason or "the sandbox stopped")
            if self.virtiofsd is not None:
                await self.virtiofsd.stop()
            for task in self._tasks:
                task.cancel()
            if self.client is not None:
                with contextlib.suppress(Exception):
                    await self.client.close()
            remove_vm_dir(self.layout.root)
            self.mark("torn down")
        finally:
            self._torn_down.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()


async def _exited_within(vm: QemuVM, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError, CocoonError):
        await vm.wait(timeout=seconds)
    return not vm.running


def _report(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(message) + "\n").encode())
        os.close(fd)


async def run(config: SandboxConfig, ready_fd: int | None) -> int:
    monitor = Monitor(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, monitor.request_stop,
                                f"monitor got {signal.Signals(sig).name}")
    try:
        await monitor.boot()
    except (CocoonError, OSError) as err:
        logger.error("sandbox %s failed to start: %s", config.sandbox_id, err)
        monitor.request_stop(str(err))
        await monitor.teardown(grace=0.5)
        _report(ready_fd, {"ok": False, "error": str(err)})
        return 1
    except BaseException as err:
        logger.exception("sandbox %s failed to start", config.sandbox_id)
        monitor.request_stop(f"{type(err).__name__}: {err}")
        await monitor.teardown(grace=0.5)
        _report(ready_fd, {"ok": False, "error": f"internal error: {type(err).__name__}: {err}"})
        return 1
    details = monitor.details
    _report(ready_fd, {"ok": True, "monitor_pid": os.getpid(),
                       "qemu_pid": monitor.vm.pid if monitor.vm else None,
                       "kernel_release": details.kernel_release if details else "",
                       "boot_id": details.boot_id if details else "",
                       "accel": monitor.accel, "phases": monitor.phases})
    await monitor.wait_stopped()
    logger.info("sandbox %s stopping: %s", config.sandbox_id, monitor.stop_reason)
    await monitor.teardown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cocoon-monitor")
    parser.add_argument("vm_dir", type=Path)
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args(argv)
    config = SandboxConfig.load(args.vm_dir / "sandbox.json")
    log.setup("DEBUG" if config.debug else "INFO", path=str(config.layout.monitor_log))
    # the monitor must not hold the caller's stdio open (conmon waits for EOF on it)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        return asyncio.run(run(config, args.ready_fd))
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
