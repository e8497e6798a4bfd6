"""The agent's ttrpc services: `grpc.AgentService` and `grpc.Health`.

Handlers are thin: they decode what the host sent, call the container or guest code, and encode
the answer. Errors leave as `RPCError` with a gRPC code (ContainerError is one), which the ttrpc
server turns into the response status.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import platform
import struct
import time
from collections import deque

from google.protobuf import empty_pb2

from cocoon import __version__
from cocoon.agent import checkpoint, hostpaths, network, pid1, plan
from cocoon.agent.container import (
    ALREADY_EXISTS,
    INVALID_ARGUMENT,
    NOT_FOUND,
    Container,
    ContainerError,
    set_winsize,
)
from cocoon.agent.process import Process, Reaper
from cocoon.errors import ConfigError, RPCError
from cocoon.linux import syscalls as sc
from cocoon.oci import convert
from cocoon.oci.spec import parse_spec
from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2, kata_oci_pb2, kata_types_pb2
from cocoon.ttrpc.server import CallContext
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.agent.service")

MAX_READ = 1 << 20
DEVICE_WAIT = 5.0   # seconds a hot-plugged virtio-fs device gets to appear
DEVICE_POLL = 0.01
MODULES_DRIVER = "cocoon-modules"  # a Storage that is the kernel's module tree
MODULES_PARENT = "/usr/lib/modules"  # where it is mounted, as <release>
KERNEL_ROOT = "/proc/2/root"  # the root the kernel's own threads (kthreadd) run with
OOM_POLL_INTERVAL = 0.1
EMPTY = empty_pb2.Empty()


def _kernel_boot_id() -> str:
    """The kernel draws its boot id from its RNG when it is first read, not at boot: a template
    must never read it, so that each clone draws its own after the host reseeded it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class AgentState:
    """What the agent knows: its containers, its reaper, when it started."""

    def __init__(self, reaper: Reaper, started_ns: int) -> None:
        self.reaper = reaper
        self.containers: dict[str, Container] = {}
        self.started_ns = started_ns
        self.ready_ns = 0
        self.mounted: list[str] = []
        self.oom_events: deque[str] = deque(maxlen=1024)
        self.oom_seen: dict[str, int] = {}
        self.oom_changed = asyncio.Event()
        self.power_off_requested = asyncio.Event()

    def container(self, container_id: str) -> Container:
        try:
            return self.containers[container_id]
        except KeyError:
            raise ContainerError(NOT_FOUND, f"container {container_id!r} does not exist") from None

    def poll_oom(self) -> None:
        for cid, container in self.containers.items():
            if container.cgroup is None:
                continue
            count = container.cgroup.oom_kills()
            if count > self.oom_seen.get(cid, 0):
                self.oom_seen[cid] = count
                self.oom_events.append(cid)
                self.oom_changed.set()


async def _mount_storage(storage: agent_pb2.Storage, state: AgentState,
                         device_wait: float = DEVICE_WAIT) -> None:
    """Mount one storage. A virtio-fs device hot-plugged into a restored VM is probed by the
    guest a little after the host added it: until then its tag is unknown (ENOENT/EINVAL), so
    the mount is retried up to `device_wait`."""
    target = storage.mount_point
    if target in state.mounted:
        return
    if storage.driver == MODULES_DRIVER:
        try:
            target = hostpaths.clean(target, "module tree mount point")
            if os.path.dirname(target) != MODULES_PARENT:
                raise hostpaths.PathRefused(f"module tree mount point {target!r} is not in "
                                            f"{MODULES_PARENT}")
            source = hostpaths.clean(storage.source, "module tree")
            if not any(hostpaths.beneath(source, root) for root in state.mounted):
                raise hostpaths.PathRefused(f"module tree {source!r} is in no storage")
            hostpaths.stays_within(source, state.mounted, "module tree")
        except hostpaths.PathRefused as err:
            raise ContainerError(INVALID_ARGUMENT, str(err)) from None
        _mount_modules(source, target)
        state.mounted.append(target)
        return
    try:
        target = hostpaths.in_area(target, "storage mount point")
    except hostpaths.PathRefused as err:
        raise ContainerError(INVALID_ARGUMENT, str(err)) from None
    os.makedirs(target, exist_ok=True)
    fstype = storage.fstype or {"virtio-fs": "virtiofs"}.get(storage.driver, storage.driver)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + device_wait
    while True:
        try:
            sc.mount(storage.source, target, fstype, 0, ",".join(storage.options) or None)
            break
        except OSError as err:
            if fstype == "virtiofs" and err.errno in (errno.ENOENT, errno.EINVAL) \
                    and loop.time() < deadline:
                await asyncio.sleep(DEVICE_POLL)
                continue
            raise ContainerError(StatusCode.INTERNAL,
                                 f"mounting {storage.driver} {storage.source} on {target}: "
                                 f"{err.strerror}") from err
    if fstype == "virtiofs":
        # a shared mount, so that every submount beneath it (a volume, or a mount the host
        # makes later in one) is shared too: a container's `slave` or `rslave` volume is then
        # a slave of it, as under runc a volume is of the host's mount
        sc.mount(None, target, None, sc.MS_SHARED)
    state.mounted.append(target)


def _check_host_paths(oci: kata_oci_pb2.Spec, storages: list[str]) -> None:
    """The container's root and bind sources, as the host named them, stay where they lie
    (see `hostpaths`)."""
    paths = [("root.path", oci.Root.Path)] if oci.Root.Path else []
    paths += [(f"mounts[{index}].source", mount.source)
              for index, mount in enumerate(oci.Mounts)
              if mount.type == "bind" or {"bind", "rbind"} & set(mount.options)]
    try:
        for what, path in paths:
            hostpaths.stays_within(path, storages, what)
    except hostpaths.PathRefused as err:
        raise ContainerError(INVALID_ARGUMENT, str(err)) from None


def _mount_modules(source: str, target: str) -> None:
    """The kernel's whole module tree (from the host, through the share) over the image's few
    modules, read-only, where the kernel's module loader looks: its usermode helper
    (/sbin/modprobe) runs with the root the kernel booted with, not the agent's (the agent
    lives in a bind of it, see pid1), so the mount is made there, through kthreadd's root."""
    where = KERNEL_ROOT + target
    try:
        sc.mount(source, where, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, where, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
    except OSError as err:
        raise ContainerError(StatusCode.INTERNAL, f"mounting the module tree {source} on "
                             f"{target}: {err.strerror}") from err


def guest_mounts_under(path: str, mountinfo: str) -> list[str]:
    """Mount points at or below `path` in a mountinfo text, deepest first."""
    prefix = path.rstrip("/")
    found = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            target = fields[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                found.add(target)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _forget_share_mounts(directory: str, state: AgentState) -> None:
    """Detach the virtio-fs submounts a removed container's files appeared on.

    The host unmounts its binds under the share and removes the container's directory when a
    container goes; the guest keeps its automounted submounts of them and, for the entry
    timeout, its cached lookups, now stale: a later container of the same id in this sandbox
    would find the old, deleted rootfs. Detaching the submounts and dropping the unused
    dentries makes the next lookup ask virtiofsd again.
    """
    if not any(directory.startswith(m.rstrip("/") + "/") for m in state.mounted):
        return
    with open("/proc/self/mountinfo") as f:
        targets = guest_mounts_under(directory, f.read())
    for target in targets:
        try:
            sc.umount2(target, sc.MNT_DETACH)
        except OSError as err:
            logger.warning("cannot detach %s: %s", target, err)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
    except OSError as err:
        logger.warning("cannot drop the dentry cache: %s", err)


def _process(container: Container, exec_id: str) -> Process:
    return container.process(exec_id)


class AgentService:
    """grpc.AgentService: every method the host uses; the rest answer UNIMPLEMENTED."""

    def __init__(self, state: AgentState) -> None:
        self.state = state

    # --- sandbox ---------------------------------------------------------------------------

    async def CreateSandbox(self, request: agent_pb2.CreateSandboxRequest,
                            ctx: CallContext) -> empty_pb2.Empty:
        if request.hostname:
            sc.sethostname(request.hostname)
        for storage in request.storages:
            await _mount_storage(storage, self.state)
        return EMPTY

    async def DestroySandbox(self, request: agent_pb2.DestroySandboxRequest,
                             ctx: CallContext) -> empty_pb2.Empty:
        for cid in list(self.state.containers):
            container = self.state.containers.pop(cid)
            await container.destroy(timeout=2.0)
        os.sync()
        self.state.power_off_requested.set()
        return EMPTY

    async def GetGuestDetails(self, request: agent_pb2.GuestDetailsRequest,
                              ctx: CallContext) -> agent_pb2.GuestDetailsResponse:
        mem_total = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
        return agent_pb2.GuestDetailsResponse(
            agent_details=agent_pb2.AgentDetails(version=__version__, init_daemon=True,
                                                 storage_handlers=["virtio-fs"],
                                                 supports_seccomp=True),
            kernel_release=platform.release(),
            mem_total_bytes=mem_total,
            boot_id=_kernel_boot_id(),
            agent_started_ns=self.state.started_ns,
            agent_ready_ns=self.state.ready_ns,
            uptime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        )

    async def SetGuestDateTime(self, request: agent_pb2.SetGuestDateTimeRequest,
                               ctx: CallContext) -> empty_pb2.Empty:
        time.clock_settime_ns(time.CLOCK_REALTIME,
                              request.Sec * 1_000_000_000 + request.Usec * 1000)
        return EMPTY

    async def ReseedRandomDev(self, request: agent_pb2.ReseedRandomDevRequest,
                              ctx: CallContext) -> empty_pb2.Empty:
        if request.data:
            rndaddentropy = 0x40085203
            with open("/dev/random", "wb", buffering=0) as f:
                payload = struct.pack("ii", len(request.data) * 8, len(request.data))
                try:
                    fcntl.ioctl(f, rndaddentropy, payload + request.data)
                except OSError:
                    f.write(request.data)  # not credited, but still mixed in
        with open("/dev/urandom", "wb", buffering=0) as f, contextlib.suppress(OSError):
            fcntl.ioctl(f, 0x5207)  # RNDRESEEDCRNG: make the new entropy count now
        return EMPTY

    async def CopyFile(self, request: agent_pb2.CopyFileRequest,
                       ctx: CallContext) -> empty_pb2.Empty:
        try:
            hostpaths.copy_file(request.path, request.data, request.offset,
                                file_mode=request.file_mode or 0o644,
                                dir_mode=request.dir_mode or 0o755,
                                uid=request.uid, gid=request.gid)
        except hostpaths.PathRefused as err:
            raise ContainerError(INVALID_ARGUMENT, str(err)) from None
        return EMPTY

    # --- containers --------------------------------------------------------------------------

    async def CreateContainer(self, request: agent_pb2.CreateContainerRequest,
                              ctx: CallContext) -> empty_pb2.Empty:
        cid = request.container_id
        if not cid or "/" in cid or cid.startswith("."):
            raise ContainerError(INVALID_ARGUMENT, f"invalid container id {cid!r}")
        for storage in request.storages:
            await _mount_storage(storage, self.state)
        _check_host_paths(request.OCI, self.state.mounted)
        await self.create(cid, request.OCI)
        return EMPTY

    async def create(self, cid: str, oci: kata_oci_pb2.Spec) -> None:
        """CreateContainer past the checks of the host's request (the warm-up uses it too)."""
        if cid in self.state.containers:
            raise ContainerError(ALREADY_EXISTS, f"container {cid!r} already exists")
        try:
            spec = parse_spec(convert.spec_from_proto(oci).to_dict(),
                              source=f"container {cid} spec")
            config = plan.container_config(cid, spec, self.state.containers)
        except (ConfigError, ValueError) as err:
            raise ContainerError(INVALID_ARGUMENT, str(err)) from err
        container = await Container.create(cid, config, self.state.reaper)
        self.state.containers[cid] = container
        self.state.oom_seen[cid] = 0

    async def restore(self, cid: str, oci: kata_oci_pb2.Spec,
                      options: guest_pb2.CriuOptions) -> None:
        """A container made of a checkpoint's processes (`cocoon.agent.checkpoint`)."""
        if not cid or "/" in cid or cid.startswith("."):
            raise ContainerError(INVALID_ARGUMENT, f"invalid container id {cid!r}")
        if cid in self.state.containers:
            raise ContainerError(ALREADY_EXISTS, f"container {cid!r} already exists")
        _check_host_paths(oci, self.state.mounted)
        try:
            spec = parse_spec(convert.spec_from_proto(oci).to_dict(),
                              source=f"container {cid} spec")
            config = plan.container_config(cid, spec, self.state.containers)
        except (ConfigError, ValueError) as err:
            raise ContainerError(INVALID_ARGUMENT, str(err)) from err
        container = await checkpoint.restore(cid, config, options, self.state.reaper)
        self.state.containers[cid] = container
        self.state.oom_seen[cid] = 0

    async def StartContainer(self, request: agent_pb2.StartContainerRequest,
                             ctx: CallContext) -> empty_pb2.Empty:
        await self.state.container(request.container_id).start()
        return EMPTY

    async def RemoveContainer(self, request: agent_pb2.RemoveContainerRequest,
                              ctx: CallContext) -> empty_pb2.Empty:
        container = self.state.container(request.container_id)
        await container.destroy(timeout=float(request.timeout or 10))
        self.state.containers.pop(request.container_id, None)
        self.state.oom_seen.pop(request.container_id, None)
        _forget_share_mounts(os.path.dirname(container.config.init.rootfs.rootfs), self.state)
        return EMPTY

    async def ExecProcess(self, request: agent_pb2.ExecProcessRequest,
                          ctx: CallContext) -> empty_pb2.Empty:
        container = self.state.container(request.container_id)
        if not request.exec_id:
            raise ContainerError(INVALID_ARGUMENT, "ExecProcess needs an exec_id")
        try:
            process = convert.process_from_proto(request.process)
            process_plan = plan.process_plan(process)
            plan.check_mapped(process_plan, container.config.init)
        except (ConfigError, ValueError) as err:
            raise ContainerError(INVALID_ARGUMENT, str(err)) from err
        process_plan.seccomp = container.config.init.process.seccomp
        size = None
        if process.console_size is not None:
            size = (process.console_size.height, process.console_size.width)
        await container.exec(request.exec_id, process_plan, size)
        return EMPTY

    async def SignalProcess(self, request: agent_pb2.SignalProcessRequest,
                            ctx: CallContext) -> empty_pb2.Empty:
        if not 0 < request.signal < 65:
            raise ContainerError(INVALID_ARGUMENT, f"invalid signal {request.signal}")
        container = self.state.container(request.container_id)
        container.signal(request.exec_id, request.signal, all_processes=request.all)
        return EMPTY

    async def WaitProcess(self, request: agent_pb2.WaitProcessRequest,
                          ctx: CallContext) -> agent_pb2.WaitProcessResponse:
        container = self.state.container(request.container_id)
        status = await _process(container, request.exec_id).wait()
        return agent_pb2.WaitProcessResponse(status=status)

    async def ListProcesses(self, request: agent_pb2.ListProcessesRequest,
                            ctx: CallContext) -> agent_pb2.ListProcessesResponse:
        container = self.state.container(request.container_id)
        pids = container.cgroup.pids() if container.cgroup else []
        if request.format == "json":
            return agent_pb2.ListProcessesResponse(process_list=json.dumps(pids).encode())
        lines = ["PID   USER     TIME  COMMAND"]
        for pid in pids:
            lines.append(_ps_line(pid))
        return agent_pb2.ListProcessesResponse(process_list=("\n".join(lines) + "\n").encode())

    async def UpdateContainer(self, request: agent_pb2.UpdateContainerRequest,
                              ctx: CallContext) -> empty_pb2.Empty:
        container = self.state.container(request.container_id)
        resources = convert.resources_from_proto(request.resources).to_dict()
        container.update(resources)
        return EMPTY

    async def StatsContainer(self, request: agent_pb2.StatsContainerRequest,
                             ctx: CallContext) -> agent_pb2.StatsContainerResponse:
        container = self.state.container(request.container_id)
        stats = container.cgroup.stats() if container.cgroup else {}
        return agent_pb2.StatsContainerResponse(cgroup_stats=_cgroup_stats(stats))

    async def PauseContainer(self, request: agent_pb2.PauseContainerRequest,
                             ctx: CallContext) -> empty_pb2.Empty:
        await self.state.container(request.container_id).pause()
        return EMPTY

    async def ResumeContainer(self, request: agent_pb2.ResumeContainerRequest,
                              ctx: CallContext) -> empty_pb2.Empty:
        await self.state.container(request.container_id).resume()
        return EMPTY

    async def GetOOMEvent(self, request: agent_pb2.GetOOMEventRequest,
                          ctx: CallContext) -> agent_pb2.OOMEvent:
        while not self.state.oom_events:
            self.state.oom_changed.clear()
            self.state.poll_oom()
            if self.state.oom_events:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OOM_POLL_INTERVAL):
                    await self.state.oom_changed.wait()
        return agent_pb2.OOMEvent(container_id=self.state.oom_events.popleft())

    # --- stdio -------------------------------------------------------------------------------

    async def WriteStdin(self, request: agent_pb2.WriteStreamRequest,
                         ctx: CallContext) -> agent_pb2.WriteStreamResponse:
        process = _process(self.state.container(request.container_id), request.exec_id)
        if process.stdin is None:
            raise ContainerError(StatusCode.FAILED_PRECONDITION, "the process has no stdin")
        try:
            written = await process.stdin.write(request.data)
        except (BrokenPipeError, OSError) as err:
            raise ContainerError(StatusCode.FAILED_PRECONDITION,
                                 f"stdin of {request.container_id}: {err}") from err
        return agent_pb2.WriteStreamResponse(len=written)

    async def _read(self, request: agent_pb2.ReadStreamRequest,
                    stderr: bool) -> agent_pb2.ReadStreamResponse:
        process = _process(self.state.container(request.container_id), request.exec_id)
        stream = process.stderr if stderr else process.stdout
        if stream is None:
            return agent_pb2.ReadStreamResponse(data=b"")
        size = min(request.len or MAX_READ, MAX_READ)
        return agent_pb2.ReadStreamResponse(data=await stream.read(size))

    async def ReadStdout(self, request: agent_pb2.ReadStreamRequest,
                         ctx: CallContext) -> agent_pb2.ReadStreamResponse:
        return await self._read(request, stderr=False)

    async def ReadStderr(self, request: agent_pb2.ReadStreamRequest,
                         ctx: CallContext) -> agent_pb2.ReadStreamResponse:
        return await self._read(request, stderr=True)

    async def CloseStdin(self, request: agent_pb2.CloseStdinRequest,
                         ctx: CallContext) -> empty_pb2.Empty:
        process = _process(self.state.container(request.container_id), request.exec_id)
        if process.terminal and process.stdin is not None:
            # a terminal has no separate stdin to close: send EOF (^D) as a typist would
            with contextlib.suppress(OSError):
                await process.stdin.write(b"\x04")
        elif process.stdin is not None:
            process.stdin.close()
        return EMPTY

    async def TtyWinResize(self, request: agent_pb2.TtyWinResizeRequest,
                           ctx: CallContext) -> empty_pb2.Empty:
        process = _process(self.state.container(request.container_id), request.exec_id)
        if process.pty_master is None:
            raise ContainerError(StatusCode.FAILED_PRECONDITION, "the process has no terminal")
        set_winsize(process.pty_master, request.row, request.column)
        return EMPTY

    # --- networking (see cocoon.agent.network) ----------------------------------------------

    async def UpdateInterface(self, request: agent_pb2.UpdateInterfaceRequest,
                              ctx: CallContext) -> kata_types_pb2.Interface:
        return await network.update_interface(request.interface)

    async def UpdateRoutes(self, request: agent_pb2.UpdateRoutesRequest,
                           ctx: CallContext) -> agent_pb2.Routes:
        return await network.update_routes(request.routes)

    async def ListInterfaces(self, request: agent_pb2.ListInterfacesRequest,
                             ctx: CallContext) -> agent_pb2.Interfaces:
        return await network.list_interfaces()

    async def ListRoutes(self, request: agent_pb2.ListRoutesRequest,
                         ctx: CallContext) -> agent_pb2.Routes:
        return await network.list_routes()

    async def AddARPNeighbors(self, request: agent_pb2.AddARPNeighborsRequest,
                              ctx: CallContext) -> empty_pb2.Empty:
        await network.add_arp_neighbors(request.neighbors)
        return EMPTY


def _ps_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        uid = os.stat(f"/proc/{pid}").st_uid
    except (OSError, IndexError, ValueError):
        return f"{pid:<5} ?        0:00  ?"
    seconds = ticks // os.sysconf("SC_CLK_TCK")
    return f"{pid:<5} {uid:<8} {seconds // 60}:{seconds % 60:02d}  {cmd or '?'}"


def _cgroup_stats(stats: dict[str, int]) -> agent_pb2.CgroupStats:
    usec = 1000
    return agent_pb2.CgroupStats(
        cpu_stats=agent_pb2.CpuStats(
            cpu_usage=agent_pb2.CpuUsage(
                total_usage=stats.get("cpu.usage_usec", 0) * usec,
                usage_in_usermode=stats.get("cpu.user_usec", 0) * usec,
                usage_in_kernelmode=stats.get("cpu.system_usec", 0) * usec),
            throttling_data=agent_pb2.ThrottlingData(
                periods=stats.get("cpu.nr_periods", 0),
                throttled_periods=stats.get("cpu.nr_throttled", 0),
                throttled_time=stats.get("cpu.throttled_usec", 0) * usec)),
        memory_stats=agent_pb2.MemoryStats(
            cache=stats.get("memory.file", 0),
            usage=agent_pb2.MemoryData(usage=stats.get("memory.current", 0),
                                       limit=stats.get("memory.max", 0),
                                       failcnt=stats.get("memory.oom_kill", 0)),
            swap_usage=agent_pb2.MemoryData(usage=stats.get("memory.swap.current", 0)),
            stats={k.removeprefix("memory."): v for k, v in stats.items()
                   if k.startswith("memory.")}),
        pids_stats=agent_pb2.PidsStats(current=stats.get("pids.current", 0),
                                       limit=stats.get("pids.max", 0)),
    )


class HealthService:
    """grpc.Health: the host's readiness probe."""

    async def Check(self, request: health_pb2.CheckRequest,
                    ctx: CallContext) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Version(self, request: health_pb2.CheckRequest,
                      ctx: CallContext) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc", agent_version=__version__)


def uptime_ns() -> int:
    return int(pid1.uptime() * 1e9)


__all__ = ["AgentService", "AgentState", "HealthService", "RPCError", "uptime_ns"]
