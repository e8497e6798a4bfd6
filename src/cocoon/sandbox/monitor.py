"""The sandbox monitor: one long-lived host process per VM.

It owns QEMU (and QMP), virtiofsd and the agent channel, and serves local clients on a unix
socket (mode 0600), multiplexing their calls onto the channel (the proxy). It tells whoever
started it that the sandbox is ready (or why not) on an inherited pipe, then lives until it is
asked to shut down, is signalled, or QEMU or virtiofsd exits; in every case it removes
everything the sandbox made on the host before it exits.

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

from cocoon import log, network
from cocoon.errors import CocoonError, RPCError, SandboxError
from cocoon.guest import assets
from cocoon.guest.kernel import Kernel
from cocoon.hypervisor import accel as accel_mod
from cocoon.hypervisor.config import MemoryBackend, NetInterface, VirtioFsShare, VMConfig
from cocoon.hypervisor.qemu import QemuVM, describe_exit
from cocoon.protocols.gen import agent_pb2, monitor_pb2
from cocoon.runtime import sizing
from cocoon.sandbox import confinement, pool, vmstart
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.layout import DEBUG_CONSOLE, SandboxConfig
from cocoon.sandbox.portmirror import PortMirror
from cocoon.sandbox.proxy import AgentProxy
from cocoon.sandbox.share import GUEST_MOUNTPOINT, MODULES_DIR, VIRTIOFS_TAG, Share, remove_vm_dir
from cocoon.sandbox.shimserver import ShimServer
from cocoon.sandbox.virtiofsd import Virtiofsd
from cocoon.template import clone, store
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.sandbox.monitor")

MAX_AGENT_FAILURES = 3   # protocol errors from the guest before the sandbox is given up
DESTROY_GRACE = 3.0      # seconds for the guest to power off after DestroySandbox
CLONE_AGENT_TIMEOUT = 20.0  # a clone answers in well under a second; a loaded host can delay it
RESEED_BYTES = 512
MODULES_DRIVER = "cocoon-modules"  # the agent's Storage driver for the kernel's module tree
WARM_UP_ID = ".warmup"  # in the share: a name no container id can have


class Monitor:
    def __init__(self, config: SandboxConfig, pool_template: str | None = None) -> None:
        self.config = config
        self.pool_template = pool_template
        self.layout = config.layout
        self.id = config.sandbox_id
        self.vm: QemuVM | None = None
        self.virtiofsd: Virtiofsd | None = None
        self.share: Share | None = None
        self.network: network.NetworkAttachment | None = None
        self.ports: PortMirror | None = None  # the guest's listening ports, on the host side
        self._nic_count = 0
        self.proxy = AgentProxy(self.id, local=self._local)
        self.server: asyncio.AbstractServer | None = None
        self.shims: ShimServer | None = None
        self.kernel: Kernel | None = None  # the guest's: its module tree is shared in
        self.agent: AgentClient | None = None  # the monitor's own client, through its proxy
        self.state = "booting"
        self.accel = ""
        self.details: agent_pb2.GuestDetailsResponse | None = None
        self.phases: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._torn_down = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._vm_tasks: list[asyncio.Task[Any]] = []
        self._share_plugged = False
        self._next_port = 0  # the template's next empty PCIe root port
        self.started_from = ""

    # --- phases ------------------------------------------------------------------------------

    def mark(self, phase: str, at: float | None = None) -> None:
        seconds = (time.monotonic() if at is None else at) - self.t0
        self.phases[phase] = seconds
        logger.info("sandbox %s: %s at %.3f s", self.id, phase, seconds)

    # --- start -------------------------------------------------------------------------------

    async def boot(self) -> None:
        """Start the VM (a clone of a template, else a cold boot), wait for its agent, and make
        it this sandbox's: share mounted, network configured. A pool member (`pool_template`)
        stops after the clone is up and warm, and is made a sandbox by `claim`."""
        self.layout.qemu_dir.mkdir(exist_ok=True, mode=0o700)
        decision = await accel_mod.choose_accel_async(
            cache_dir=Path(self.config.asset_dir) if self.config.asset_dir else None)
        self.accel = decision.accel
        boot = await asyncio.to_thread(vmstart.guest_boot, self.config, decision)
        self.kernel = boot.kernel
        template = await vmstart.obtain_template(self.config, boot, self.layout.qemu_dir,
                                                 default_memory_mib=sizing.default_memory_mib())
        if self.pool_template == pool.PENDING and template is not None:
            # a pending member: whatever template sandboxes use now is the one it waits for
            self.pool_template = template.name
            pool.set_template(self.layout, template.name, pool.cost_of(template.meta))
        if self.pool_template is not None and (template is None
                                               or template.name != self.pool_template):
            raise SandboxError(f"pool member for template {self.pool_template}: that is not "
                               "the template sandboxes start from now")
        self.server = await asyncio.start_unix_server(self.proxy.serve_client,
                                                      path=str(self.layout.monitor_socket))
        os.chmod(self.layout.monitor_socket, 0o600)
        self.agent = await self._internal_client()
        self.shims = ShimServer(self.id, self.agent, self.layout.stdio_socket)
        await self.shims.start(self.layout.shim_socket)
        if template is not None:
            try:
                await self._start_clone(template)
            except (CocoonError, OSError) as err:
                if self.stop_reason or self.pool_template is not None:
                    raise
                logger.warning("sandbox %s: the clone of template %s failed (%s); booting cold",
                               self.id, template.name, err)
                await self._abandon_vm()
                template = None
        if template is None:
            await self._start_cold(boot)
            await self._make_sandbox()
        elif self.pool_template is not None:
            await self._prepare_member()
            self.state = "pooled"
            return
        else:
            await self._plug_devices()
            await self._make_sandbox()
        self._check_share()
        self.state = "running"

    def _check_share(self) -> None:
        """A virtiofsd that died while the sandbox started fails the start, rather than the
        sandbox stopping a moment after its create answered (the roots are on the share)."""
        if self.virtiofsd is not None and not self.virtiofsd.running:
            raise SandboxError(f"sandbox {self.id}: {self.virtiofsd.failure()} while it started")

    async def _prepare_member(self) -> None:
        """A pool member gets ready for whoever claims it: the share (this directory's, whoever
        claims it) plugged and mounted, and two throwaway containers run, the second from a
        busybox tree on the share, so that QEMU has translated the guest code a container's
        start runs, the share's included (measured under TCG: a real container's create and
        start took 0.46 s and 0.30 s in a fresh clone; about 0.15 s and 0.03 s once warm)."""
        assert self.agent is not None
        seconds = await self.agent.warm_up()
        logger.info("pool member %s: warmed up in %.3f s", self.layout.root.name, seconds)
        await self._plug_share()
        await self.agent.create_sandbox("", self.id, self._storages())
        self.mark("share mounted")
        if self.share is not None:
            rootfs = await asyncio.to_thread(assets.ensure_busybox_rootfs,
                                             Path(self.config.asset_dir)
                                             if self.config.asset_dir else None)
            guest_root = self.share.expose_rootfs(WARM_UP_ID, rootfs, readonly=True)
            try:
                seconds = await self.agent.warm_up(guest_root)
            finally:
                self.share.remove_container(WARM_UP_ID)
            logger.info("pool member %s: warmed up on the share in %.3f s",
                        self.layout.root.name, seconds)
        self.mark("warmed up")

    async def claim(self, config: SandboxConfig) -> None:
        """A pool member becomes the sandbox `config` describes (in this member's directory)."""
        if self.state != "pooled":
            raise RPCError(StatusCode.FAILED_PRECONDITION,
                           f"sandbox {self.id} is {self.state}, not waiting in the pool")
        assert self.pool_template is not None
        self.state = "booting"
        pool.unmark(self.layout, self.pool_template)
        pool.renice([os.getpid(), *(p for p in (self.vm.pid if self.vm else None,
                                                 self.virtiofsd.pid if self.virtiofsd else None)
                                   if p)])
        self.config = config
        self.id = config.sandbox_id
        self.proxy.sandbox_id = config.sandbox_id
        if self.shims is not None:
            self.shims.sandbox_id = config.sandbox_id
        config.save()
        with contextlib.suppress(FileNotFoundError):
            (self.layout.root / pool.MARKER).unlink()
        self.t0 = time.monotonic()
        self.phases = {}
        self.started_from = f"pool (template {self.pool_template})"
        self.pool_template = None
        await self._set_clock()
        await self._plug_devices()
        await self._make_sandbox()
        self._check_share()
        self.state = "running"

    async def _plug_share(self) -> None:
        """The share and its virtiofsd, hot-plugged into the next empty root port (once: a
        pool member has it plugged and mounted before it is claimed)."""
        assert self.vm is not None
        if self._share_plugged:
            return
        for index, share in enumerate(await self._start_share()):
            try:
                await self.vm.plug_share(index, share, self._next_port)
            except CocoonError as err:
                why = self.virtiofsd.failure() if self.virtiofsd else None
                if why is not None:
                    raise SandboxError(f"sandbox {self.id}: {why}") from err
                raise
            self._next_port += 1
        self._share_plugged = True

    async def _plug_devices(self) -> None:
        """A clone's share and NICs: virtiofsd and the taps made now, hot-plugged into the
        template's empty root ports."""
        assert self.vm is not None
        await self._plug_share()
        # the container's network namespace: taps and tc redirects, handed to QEMU over QMP
        self.network = await asyncio.to_thread(network.attach, self.config.netns)
        self._record_network()
        for nic in self._nics():
            await self.vm.plug_nic(self._nic_count, nic, self._next_port)
            self._nic_count += 1
            self._next_port += 1
        if self.network is not None:
            self.network.close_fds()  # QEMU holds the taps now: they die with it
        self.mark("devices plugged")

    def _record_network(self) -> None:
        """Write down the redirects made in the container's namespace: if this monitor is
        killed, whoever cleans up after it removes them (`launcher.stop_sandbox_async`)."""
        if self.network is not None:
            self.network.record(self.layout.network_record)

    def _nics(self) -> tuple[NetInterface, ...]:
        """The namespace's NICs; on the host network, a user-mode NIC (network/hostnet.py)."""
        if self.config.host_network:
            from cocoon.network import hostnet

            return (hostnet.user_nic(),)
        return self.network.nics if self.network else ()

    async def attach_network(self, netns: str) -> int:
        """Carry `netns` into the running VM (see monitor.proto's AttachNetwork)."""
        if self.state != "running" or self.vm is None or self.agent is None:
            raise RPCError(StatusCode.FAILED_PRECONDITION, f"sandbox {self.id} is {self.state}")
        if self.network is not None:
            raise RPCError(StatusCode.FAILED_PRECONDITION,
                           f"sandbox {self.id} already carries {self.network.netns}")
        try:
            attachment = await asyncio.to_thread(network.attach, netns)
        except CocoonError as err:
            raise RPCError(StatusCode.INVALID_ARGUMENT, str(err)) from err
        if attachment is None:
            return 0
        nics = attachment.nics
        free = self.vm.config.hotplug_ports - self._next_port
        if len(nics) > free:
            await asyncio.to_thread(attachment.detach)
            raise RPCError(StatusCode.FAILED_PRECONDITION,
                           f"sandbox {self.id}: {len(nics)} interfaces appeared in {netns} after "
                           f"its VM started, and it has {free} empty PCIe ports for them (a VM "
                           "booted cold has none: with templates on it would have 8)")
        self.network = attachment
        self._record_network()
        for nic in nics:
            await self.vm.plug_nic(self._nic_count, nic, self._next_port)
            self._nic_count += 1
            self._next_port += 1
        attachment.close_fds()  # QEMU holds the taps now: they die with it
        await attachment.configure_guest(self.agent)
        self.mark("network attached")
        self._mirror_ports(netns)
        return len(nics)

    def _storages(self) -> list[agent_pb2.Storage]:
        """The share; then the kernel's whole module tree from it, where the guest kernel's
        module loader looks (so a privileged container's `ip link add type bridge` loads
        `bridge` on demand, as on a host, without the image carrying every module)."""
        if not self.config.share:
            return []
        storages = [agent_pb2.Storage(driver="virtio-fs", source=VIRTIOFS_TAG,
                                      fstype="virtiofs", mount_point=GUEST_MOUNTPOINT)]
        if self.kernel is not None and self.kernel.modules_dir is not None:
            storages.append(agent_pb2.Storage(
                driver=MODULES_DRIVER, source=f"{GUEST_MOUNTPOINT}/{MODULES_DIR}",
                mount_point=f"/usr/lib/modules/{self.kernel.release}"))
        return storages

    async def _make_sandbox(self) -> None:
        """The guest becomes this sandbox: hostname, the share mounted, the network set."""
        assert self.agent is not None
        await self.agent.create_sandbox(self.config.hostname, self.id, self._storages())
        self.mark("sandbox created")
        if self.network is not None:
            await self.network.configure_guest(self.agent)
            self.mark("network configured")
        elif self.config.host_network:
            from cocoon.network import guest, hostnet

            await guest.configure(self.agent, hostnet.user_plan())
            self.mark("network configured")
        if self.config.host_network:
            self._mirror_ports(None)
        elif self.config.netns not in (None, network.NEW_NAMESPACE):
            self._mirror_ports(self.config.netns)
        if self.config.extra.get(DEBUG_CONSOLE):
            await self.agent.enable_debug_console()
            logger.warning("sandbox %s: the debug console is enabled (agent.debug_console)",
                           self.id)
            self.mark("debug console enabled")

    def _mirror_ports(self, netns: str | None) -> None:
        """Mirror the guest's listening ports into `netns` (None: the host's loopback)."""
        assert self.agent is not None
        if self.ports is None:
            self.ports = PortMirror(self.agent, netns, f"sandbox {self.id}")
            self.ports.start()

    async def _start_share(self) -> tuple[VirtioFsShare, ...]:
        """The share and its virtiofsd (started again when a failed clone took it down)."""
        if not self.config.share:
            return ()
        if self.share is None:
            self.share = Share(self.layout.shared)
            self.share.create()
            if self.kernel is not None and self.kernel.modules_dir is not None:
                self.share.expose_modules(self.kernel.modules_dir)
        if self.virtiofsd is None or not self.virtiofsd.running:
            self.virtiofsd = Virtiofsd(self.layout.virtiofs_socket, self.layout.shared,
                                       self.layout.root / "virtiofsd.log",
                                       owner=self.vm.uid if self.vm is not None else None)
            await self.virtiofsd.start()
            self._tasks.append(asyncio.create_task(self._watch_virtiofsd(self.virtiofsd),
                                                   name="watch-virtiofsd"))
        return (VirtioFsShare(VIRTIOFS_TAG, self.layout.virtiofs_socket),)

    async def _start_cold(self, boot: vmstart.GuestBoot) -> None:
        self.started_from = "cold boot"
        shares = await self._start_share()
        # the container's network namespace: taps and tc redirects before QEMU gets the taps
        self.network = await asyncio.to_thread(network.attach, self.config.netns)
        self._record_network()
        nics = self._nics()
        self._nic_count = len(nics)
        await self._start_vm(vmstart.cold_config(self.config, boot, shares=shares, nics=nics))
        if self.network is not None:
            self.network.close_fds()  # QEMU holds the taps now: they die with it
        await self._wait_for_agent(self.config.boot_timeout)
        await self._guest_timeline()

    async def _start_clone(self, template: store.Template) -> None:
        """Restore a clone of `template` and make it a new instance: the RNG reseeded with
        host entropy before anything else, the clock set. Its devices come later."""
        self.started_from = f"template {template.name}"
        # a private copy of the template's RAM: virtiofsd maps guest RAM (a share needs it
        # shared), and QEMU's own user may not open the template's file read-write, as QEMU
        # 7.2 does for a private mapping (docs/templates.md)
        started = time.monotonic()
        memory_fd, copied = await asyncio.to_thread(clone.copy_into_memfd, template.ram)
        memory = MemoryBackend("fd", fd=memory_fd, share=True)
        logger.info("sandbox %s: %d MiB of template RAM copied in %.3f s", self.id,
                    copied >> 20, time.monotonic() - started)
        state_fd = os.open(template.state, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await self._start_vm(vmstart.clone_config(self.layout, template, memory=memory,
                                                      state_fd=state_fd))
        finally:
            os.close(state_fd)
            clone.close_quietly(memory_fd)
        assert self.vm is not None and self.agent is not None
        await self.vm.wait_restored()
        self.mark("restored")
        await self.vm.resume()
        await self._wait_for_agent(CLONE_AGENT_TIMEOUT)
        await self.agent.reseed_random_dev(os.urandom(RESEED_BYTES))
        await self._set_clock()
        self.details = await self.agent.guest_details(timeout=5.0)
        self.mark("reseeded and clock set")

    async def _set_clock(self) -> None:
        assert self.agent is not None
        await self.agent.set_guest_date_time(time.time_ns())

    async def _start_vm(self, config: VMConfig) -> None:
        self.t0 = time.monotonic()
        vm = QemuVM(config)
        self.vm = vm
        await vm.start()
        self.mark("qemu started", self.t0)
        self._vm_tasks = [asyncio.create_task(self._watch_qemu(vm), name="watch-qemu"),
                          asyncio.create_task(self._agent_loop(vm), name="agent-channel")]
        self._tasks.extend(self._vm_tasks)

    async def _abandon_vm(self) -> None:
        """Stop a VM that did not come up, so that another can take its place."""
        vm, self.vm = self.vm, None
        for task in self._vm_tasks:
            task.cancel()
        await asyncio.gather(*self._vm_tasks, return_exceptions=True)
        self._vm_tasks = []
        if vm is not None:
            with contextlib.suppress(CocoonError, OSError):
                await vm.stop(grace=0)
        await self.proxy.fail_pending("the VM was replaced")

    async def _internal_client(self) -> AgentClient:
        """The monitor's own calls go through its proxy like everyone else's."""
        mine, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        self._tasks.append(asyncio.create_task(
            self.proxy.serve_client(reader, writer, droppable=False), name="internal-client"))
        r, w = await asyncio.open_unix_connection(sock=mine)
        return AgentClient.over(r, w, peer=f"sandbox {self.id}")

    async def _wait_for_agent(self, timeout: float) -> None:
        assert self.agent is not None and self.vm is not None
        vm = self.vm
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(
                    f"sandbox {self.id}: the agent did not answer within "
                    f"{timeout:.0f} s (console: {self._console_hint()})")
            if self.stop_reason:
                raise SandboxError(f"sandbox {self.id}: {self.stop_reason} "
                                   f"(console: {self._console_hint()})")
            if not vm.running:
                raise SandboxError(f"sandbox {self.id}: {self._qemu_reason(vm)} "
                                   f"(console: {self._console_hint()})")
            try:
                await self.agent.health(timeout=min(remaining, 5.0))
                break
            except RPCError as err:
                if err.code not in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED):
                    raise
                await asyncio.sleep(0.02)
        self.mark("health answered")

    async def _guest_timeline(self) -> None:
        """After a cold boot: when the kernel and the agent started, from the guest's uptime."""
        assert self.agent is not None
        ready_host = time.monotonic()
        self.details = await self.agent.guest_details(timeout=5.0)
        uptime = self.details.uptime_ns / 1e9
        kernel_start = ready_host - uptime
        self.mark("kernel started", kernel_start)
        self.mark("agent started", kernel_start + self.details.agent_started_ns / 1e9)
        self.mark("agent ready", kernel_start + self.details.agent_ready_ns / 1e9)

    def _console_hint(self) -> str:
        if self.vm is None:
            return "no VM"
        tail = [line for line in self.vm.console_tail(5) if line.strip()]
        # quoted, never named: the file goes with the sandbox's directory
        return " | ".join(tail[-3:]) or "the console log was empty"

    # --- running -----------------------------------------------------------------------------

    async def _agent_loop(self, vm: QemuVM) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self.layout.agent_socket), limit=8 << 20)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            reason = await self.proxy.run_agent(reader, writer)
            if await _exited_within(vm, 0.5):
                reason = self._qemu_reason(vm)
            await self.proxy.fail_pending(reason)
            if self._stop.is_set() or not vm.running:
                return
            if "protocol error" in reason:
                failures += 1
                if failures >= MAX_AGENT_FAILURES:
                    self.request_stop(f"the guest broke the agent protocol {failures} times")
                    return
            await asyncio.sleep(0.05)

    def _qemu_reason(self, vm: QemuVM) -> str:
        return f"the VM exited ({describe_exit(vm.returncode)})"

    async def _watch_qemu(self, vm: QemuVM) -> None:
        """Once the sandbox runs, QEMU's end is the sandbox's; while it boots, the boot notices
        (and may replace a clone that died by a cold boot)."""
        with contextlib.suppress(CocoonError):
            await vm.wait()
        if not self._stop.is_set() and self.state != "booting":
            reason = self._qemu_reason(vm)
            logger.warning("sandbox %s: %s", self.id, reason)
            await self.proxy.fail_pending(reason)
            self.request_stop(reason)

    async def _watch_virtiofsd(self, daemon: Virtiofsd) -> None:
        """Once the sandbox runs (or waits in the pool), virtiofsd's end is the sandbox's: the
        containers' roots and volumes are on the share, and a guest without it hangs on the
        next file it opens. The VM is stopped, so the shims report the exit and `state` says
        stopped. (While a sandbox boots, the boot notices, and a failed clone's is replaced:
        this one is then no longer the sandbox's. A pool member's boot has no such way out,
        and would wait on the share until its call's deadline: it is stopped at once.)"""
        with contextlib.suppress(OSError):
            await daemon.wait()
        while self.state == "booting" and self.pool_template is None \
                and not self._stop.is_set():
            await asyncio.sleep(0.1)
        if self._stop.is_set() or daemon is not self.virtiofsd:
            return
        if self.vm is not None and await _exited_within(self.vm, 0.5):
            return  # virtiofsd went because QEMU did: QEMU's watch tells why
        reason = daemon.failure() or "virtiofsd exited"
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
        if method == "Claim":
            claim = monitor_pb2.ClaimRequest.FromString(payload)
            config = SandboxConfig.from_json(json.loads(claim.config_json))
            if Path(config.vm_dir) != self.layout.root:
                raise RPCError(StatusCode.INVALID_ARGUMENT,
                               f"a claim of {self.layout.root} names {config.vm_dir}")
            try:
                await self.claim(config)
            except (CocoonError, OSError) as err:
                if isinstance(err, RPCError) and err.code == StatusCode.FAILED_PRECONDITION:
                    raise
                self.request_stop(f"claim failed: {err}")
                raise RPCError(StatusCode.UNAVAILABLE, f"sandbox {config.sandbox_id}: {err}"
                               ) from err
            return monitor_pb2.ClaimResponse(
                ready_json=json.dumps(self.ready_report())).SerializeToString()
        if method == "AttachNetwork":
            attach = monitor_pb2.AttachNetworkRequest.FromString(payload)
            count = await self.attach_network(attach.netns)
            return monitor_pb2.AttachNetworkResponse(interfaces=count).SerializeToString()
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
            virtiofsd_pid=(self.virtiofsd.pid or 0) if self.virtiofsd else 0,
            started_from=self.started_from)

    def ready_report(self) -> dict[str, Any]:
        details = self.details
        return {"ok": True, "monitor_pid": os.getpid(),
                "qemu_pid": self.vm.pid if self.vm else None,
                "kernel_release": details.kernel_release if details else "",
                "boot_id": details.boot_id if details else "",
                "accel": self.accel, "started_from": self.started_from,
                "phases": self.phases}

    # --- stop --------------------------------------------------------------------------------

    async def teardown(self, grace: float = DESTROY_GRACE) -> None:
        """Stop the VM and remove every trace of the sandbox; safe to call more than once."""
        if self.state == "stopping":
            await self._torn_down.wait()
            return
        self.state = "stopping"
        self._stop.set()
        if self.pool_template is not None:
            pool.unmark(self.layout, self.pool_template)
        try:
            if self.server is not None:
                self.server.close()
            if self.ports is not None:
                await self.ports.close()
            if self.shims is not None:
                await self.shims.close()
            vm = self.vm
            if vm is not None and vm.running and self.proxy.connected.is_set() and self.agent:
                # the agent stops the containers and syncs the guest's filesystems before it
                # answers; the guest's own power-off is not waited for (QEMU is stopped below)
                with contextlib.suppress(CocoonError, OSError):
                    await self.agent.destroy_sandbox(timeout=grace)
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
            if self.agent is not None:
                with contextlib.suppress(Exception):
                    await self.agent.close()
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


async def run(config: SandboxConfig, ready_fd: int | None,
              pool_template: str | None = None) -> int:
    confinement.watch_children_without_threads()
    monitor = Monitor(config, pool_template)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, monitor.request_stop,
                                f"monitor got {signal.Signals(sig).name}")
    try:
        await monitor.boot()
    except (CocoonError, OSError) as err:
        logger.error("sandbox %s failed to start: %s", config.sandbox_id, err)
        # a pool member that failed on its own (not stopped) is replaced, a bounded number of
        # times: nobody else would refill the pool before the next sandbox starts
        again = pool.replacement(monitor.layout, config) \
            if pool_template is not None and monitor.stop_reason is None else None
        monitor.request_stop(str(err))
        await monitor.teardown(grace=0.5)
        _report(ready_fd, {"ok": False, "error": str(err)})
        if again is not None:
            logger.info("pool: started %d member(s) in place of %s", again(),
                        config.sandbox_id)
        return 1
    except BaseException as err:
        logger.exception("sandbox %s failed to start", config.sandbox_id)
        monitor.request_stop(f"{type(err).__name__}: {err}")
        await monitor.teardown(grace=0.5)
        _report(ready_fd, {"ok": False, "error": f"internal error: {type(err).__name__}: {err}"})
        return 1
    try:
        confinement.confine_monitor(pooled=monitor.pool_template is not None)
    except OSError as err:
        logger.error("sandbox %s: cannot drop capabilities: %s", config.sandbox_id, err)
        monitor.request_stop(f"cannot drop capabilities: {err}")
        await monitor.teardown(grace=0.5)
        _report(ready_fd, {"ok": False, "error": f"cannot drop capabilities: {err}"})
        return 1
    if monitor.pool_template is not None:
        pool.mark_ready(monitor.layout, monitor.pool_template)
    else:
        _report(ready_fd, monitor.ready_report())
    await monitor.wait_stopped()
    logger.info("sandbox %s stopping: %s", config.sandbox_id, monitor.stop_reason)
    await monitor.teardown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cocoon-monitor")
    parser.add_argument("vm_dir", type=Path)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--pool", default=None, metavar="TEMPLATE",
                        help="wait in the warm pool as a clone of TEMPLATE")
    args = parser.parse_args(argv)
    config = SandboxConfig.load(args.vm_dir / "sandbox.json")
    cgroup_error = _enter_cgroups(config.cgroup_procs)
    log.setup("DEBUG" if config.debug else "INFO", path=str(config.layout.monitor_log))
    # the monitor must not hold the caller's stdio open (conmon waits for EOF on it)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    if cgroup_error is not None:
        logger.error("sandbox %s: %s", config.sandbox_id, cgroup_error)
        _report(args.ready_fd, {"ok": False, "error": cgroup_error})
        logging.shutdown()
        return 1
    try:
        return asyncio.run(run(config, args.ready_fd, args.pool))
    finally:
        logging.shutdown()


def _enter_cgroups(procs_files: tuple[str, ...]) -> str | None:
    """Move this process into the sandbox's host cgroups first of all; the error, if any."""
    for procs in procs_files:
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        except OSError as err:
            return f"cannot enter the host cgroup {os.path.dirname(procs)}: {err.strerror}"
    return None


if __name__ == "__main__":
    sys.exit(main())
