"""The guest agent's API as the host calls it: one typed method per call, and the only place that
builds the agent's request messages.

Kata's runtime-rs has its `Agent` trait and containerd its generated clients; this is Cocoon's
one agent client. The runtime, the relays, the sandbox monitor, the containerd shim, the network
set-up and the template build all ask the agent through it, with plain values in and out.
Protobuf types stay where a caller needs the message itself: the OCI spec, a process and
resources (made by `cocoon.oci.convert`), the network interface, routes and neighbours (made by
`cocoon.network.guest`), statistics, guest details and the trim report. A style test
(tests/unit/test_layers.py) keeps the agent's `...Request(...)` constructions here.

It runs on one ttrpc connection: a sandbox monitor's socket (`SandboxClient.agent`: the monitor's
proxy forwards the agent's services to the guest) or, for a VM that has no monitor (a template
being built), the agent's own socket. Every call has a deadline: the method's default, or
`timeout=` (None: no deadline, for calls that wait on a guest process for as long as it runs).
Errors are the connection's: `RPCError` with the agent's status in `err.code`, and
`ConnectionLostError` when the connection went away.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from cocoon.errors import AgentError
from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2, kata_oci_pb2, kata_types_pb2
from cocoon.sandbox import guestreplies
from cocoon.ttrpc.client import Client

M = TypeVar("M", bound=Message)

AGENT = "grpc.AgentService"
HEALTH = "grpc.Health"
GUEST = "cocoon.GuestAgent"

CALL_TIMEOUT = 60.0     # a container's or a process's lifecycle: the guest may be busy
SANDBOX_TIMEOUT = 30.0  # setting up the sandbox, health, the network, guest details
QUICK_TIMEOUT = 10.0    # small things the agent does at once: resizes, the clock, the RNG
STDIN_TIMEOUT = 30.0    # closing a process's stdin
GUEST_TIMEOUT = 60.0    # the template's own calls (a warm-up runs a whole container)
CRIU_TIMEOUT = 300.0    # CRIU dumping or restoring a container's memory (slow under TCG)
READ_SIZE = 1 << 20     # at most this much output per read
PORT_CHUNK = 256 << 10  # a forwarded connection's bytes per call, each way
MAX_MIRRORED_PORTS = 256  # guest ports the host mirrors at most
PID_MAX = 1 << 22       # the kernel's highest pid_max (PID_MAX_LIMIT on 64-bit)
MAX_PIDS = 1 << 16      # pids a process list may name
MAX_GUEST_MEMORY = 1 << 44       # 16 TiB: more than any VM Cocoon starts
MAX_GUEST_CPUS = 1024
MAX_GUEST_CPU_SECONDS = 1e12     # about 30,000 years of one CPU
MAX_GUEST_LOAD = 1e6
MAX_STDIO_PORTS = 30    # a VM's stdio ports (cocoon.hypervisor.config.MAX_STDIO_PORTS)
STDIO_TOKEN_SIZE = 16


@dataclass(frozen=True)
class StreamPort:
    """A stream bound to a stdio port: connect to the port's socket, write `token` first."""

    port: int
    token: bytes


class AgentClient:
    """The agent's services (grpc.AgentService, grpc.Health, cocoon.GuestAgent) on a connection."""

    def __init__(self, client: Client) -> None:
        self.ttrpc = client

    @classmethod
    async def connect(cls, socket: Path, timeout: float = 5.0) -> AgentClient:
        """A connection of its own to `socket` (the agent's, or a monitor's)."""
        return cls(await Client.connect_unix(socket, timeout=timeout))

    @classmethod
    def over(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
             peer: str) -> AgentClient:
        return cls(Client(reader, writer, peer=peer))

    async def close(self) -> None:
        """Close the connection (a `SandboxClient`'s too, when this is its `.agent`)."""
        await self.ttrpc.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, request: Message, response_type: type[M], *,
                   timeout: float | None = CALL_TIMEOUT) -> M:
        """Any method of grpc.AgentService with a message the caller built: for tests that send
        what the typed methods never would. Host code uses the typed methods."""
        return await self.ttrpc.call(AGENT, method, request, response_type, timeout=timeout)

    async def _empty(self, method: str, request: Message, timeout: float | None) -> None:
        await self.call(method, request, empty_pb2.Empty, timeout=timeout)

    # --- containers ------------------------------------------------------------------------

    async def create_container(self, container_id: str, oci: kata_oci_pb2.Spec, *,
                               timeout: float | None = CALL_TIMEOUT) -> None:
        """Namespaces, mounts and cgroup made; the init process waits for `start_container`."""
        await self._empty("CreateContainer", agent_pb2.CreateContainerRequest(
            container_id=container_id, OCI=oci), timeout)

    async def start_container(self, container_id: str, *,
                              timeout: float | None = CALL_TIMEOUT) -> None:
        await self._empty("StartContainer", agent_pb2.StartContainerRequest(
            container_id=container_id), timeout)

    async def remove_container(self, container_id: str, *, stop_timeout: int = 5,
                               timeout: float | None = CALL_TIMEOUT) -> None:
        """Kill what is left of the container (its processes get `stop_timeout` seconds to
        die) and forget it."""
        await self._empty("RemoveContainer", agent_pb2.RemoveContainerRequest(
            container_id=container_id, timeout=stop_timeout), timeout)

    async def pause_container(self, container_id: str, *,
                              timeout: float | None = CALL_TIMEOUT) -> None:
        await self._empty("PauseContainer", agent_pb2.PauseContainerRequest(
            container_id=container_id), timeout)

    async def resume_container(self, container_id: str, *,
                               timeout: float | None = CALL_TIMEOUT) -> None:
        await self._empty("ResumeContainer", agent_pb2.ResumeContainerRequest(
            container_id=container_id), timeout)

    async def update_container(self, container_id: str, resources: kata_oci_pb2.LinuxResources,
                               *, timeout: float | None = CALL_TIMEOUT) -> None:
        await self._empty("UpdateContainer", agent_pb2.UpdateContainerRequest(
            container_id=container_id, resources=resources), timeout)

    async def stats_container(self, container_id: str, *, timeout: float | None = CALL_TIMEOUT
                              ) -> agent_pb2.StatsContainerResponse:
        return await self.call("StatsContainer", agent_pb2.StatsContainerRequest(
            container_id=container_id), agent_pb2.StatsContainerResponse, timeout=timeout)

    async def list_processes(self, container_id: str, format: str = "table", *,
                             timeout: float | None = CALL_TIMEOUT) -> bytes:
        """The container's processes as ps(1) prints them (`table`) or as a JSON list of guest
        pids (`json`); the bytes are the guest's, not checked here."""
        response = await self.call("ListProcesses", agent_pb2.ListProcessesRequest(
            container_id=container_id, format=format), agent_pb2.ListProcessesResponse,
            timeout=timeout)
        return response.process_list

    async def list_pids(self, container_id: str, *,
                        timeout: float | None = CALL_TIMEOUT) -> list[int]:
        """The container's guest pids. What the guest says is checked: a JSON list of distinct
        pids in the kernel's range (1 to PID_MAX), at most MAX_PIDS of them."""
        listing = await self.list_processes(container_id, "json", timeout=timeout)
        try:
            pids = json.loads(listing)
        except (ValueError, RecursionError) as err:
            raise AgentError(f"the guest's process list of {container_id} is not JSON: "
                             f"{str(err)[:80]}") from err
        if not isinstance(pids, list) or len(pids) > MAX_PIDS or not all(
                type(p) is int and 0 < p <= PID_MAX for p in pids) or len(set(pids)) != len(pids):
            raise AgentError(f"the guest's process list of {container_id} is not a list of at "
                             f"most {MAX_PIDS} distinct pids from 1 to {PID_MAX}")
        return pids

    async def get_oom_event(self, *, timeout: float | None = None) -> str:
        """Wait for the next out-of-memory kill in the guest; the id of its container (one
        that can be a container id: whether it is one of the caller's is the caller's check)."""
        event = await self.call("GetOOMEvent", agent_pb2.GetOOMEventRequest(),
                                agent_pb2.OOMEvent, timeout=timeout)
        return guestreplies.oom_container(event.container_id)

    # --- processes (exec_id "" is the container's init process) ----------------------------

    async def exec_process(self, container_id: str, exec_id: str, process: kata_oci_pb2.Process,
                           *, timeout: float | None = CALL_TIMEOUT) -> None:
        await self._empty("ExecProcess", agent_pb2.ExecProcessRequest(
            container_id=container_id, exec_id=exec_id, process=process), timeout)

    async def signal_process(self, container_id: str, exec_id: str, signal: int,
                             all: bool = False, *,
                             timeout: float | None = CALL_TIMEOUT) -> None:
        """Send `signal` to the process (`all`: to every process of the container)."""
        await self._empty("SignalProcess", agent_pb2.SignalProcessRequest(
            container_id=container_id, exec_id=exec_id, signal=signal, all=all), timeout)

    async def wait_process(self, container_id: str, exec_id: str = "", *,
                           timeout: float | None = None) -> int:
        """The process's exit status as the guest reports it (the caller checks its range)."""
        response = await self.call("WaitProcess", agent_pb2.WaitProcessRequest(
            container_id=container_id, exec_id=exec_id), agent_pb2.WaitProcessResponse,
            timeout=timeout)
        return response.status

    async def read_stdout(self, container_id: str, exec_id: str = "", size: int = READ_SIZE,
                          *, timeout: float | None = None) -> bytes:
        """The next output of the process, up to `size` bytes; b"" at the end of the stream."""
        return await self._read("ReadStdout", container_id, exec_id, size, timeout)

    async def read_stderr(self, container_id: str, exec_id: str = "", size: int = READ_SIZE,
                          *, timeout: float | None = None) -> bytes:
        return await self._read("ReadStderr", container_id, exec_id, size, timeout)

    async def _read(self, method: str, container_id: str, exec_id: str, size: int,
                    timeout: float | None) -> bytes:
        response = await self.call(method, agent_pb2.ReadStreamRequest(
            container_id=container_id, exec_id=exec_id, len=size),
            agent_pb2.ReadStreamResponse, timeout=timeout)
        if len(response.data) > size:
            raise AgentError(f"{method}: the guest sent {len(response.data)} bytes for a read "
                             f"of {size}")
        return response.data

    async def write_stdin(self, container_id: str, exec_id: str, data: bytes, *,
                          timeout: float | None = None) -> int:
        """Write to the process's stdin; how many bytes the guest took."""
        response = await self.call("WriteStdin", agent_pb2.WriteStreamRequest(
            container_id=container_id, exec_id=exec_id, data=data),
            agent_pb2.WriteStreamResponse, timeout=timeout)
        if response.len > len(data):
            raise AgentError(f"WriteStdin: the guest says it took {response.len} of "
                             f"{len(data)} bytes")
        return response.len

    async def close_stdin(self, container_id: str, exec_id: str = "", *,
                          timeout: float | None = STDIN_TIMEOUT) -> None:
        """End of file on the process's stdin, after every write that came before."""
        await self._empty("CloseStdin", agent_pb2.CloseStdinRequest(
            container_id=container_id, exec_id=exec_id), timeout)

    async def tty_win_resize(self, container_id: str, exec_id: str, rows: int, columns: int, *,
                             timeout: float | None = QUICK_TIMEOUT) -> None:
        await self._empty("TtyWinResize", agent_pb2.TtyWinResizeRequest(
            container_id=container_id, exec_id=exec_id, row=rows, column=columns), timeout)

    # --- the sandbox -------------------------------------------------------------------------

    async def create_sandbox(self, hostname: str, sandbox_id: str,
                             storages: Sequence[agent_pb2.Storage] = (), *,
                             timeout: float | None = SANDBOX_TIMEOUT) -> None:
        """The guest becomes the sandbox: its hostname set, `storages` mounted."""
        await self._empty("CreateSandbox", agent_pb2.CreateSandboxRequest(
            hostname=hostname, storages=storages, sandbox_id=sandbox_id), timeout)

    async def destroy_sandbox(self, *, timeout: float | None = SANDBOX_TIMEOUT) -> None:
        """Stop every container and sync the guest's filesystems (the guest then powers off)."""
        await self._empty("DestroySandbox", agent_pb2.DestroySandboxRequest(), timeout)

    async def reseed_random_dev(self, data: bytes, *,
                                timeout: float | None = QUICK_TIMEOUT) -> None:
        """Mix `data` (host entropy) into the guest's RNG."""
        await self._empty("ReseedRandomDev", agent_pb2.ReseedRandomDevRequest(data=data),
                          timeout)

    async def set_guest_date_time(self, unix_ns: int, *,
                                  timeout: float | None = QUICK_TIMEOUT) -> None:
        """Set the guest's clock to `unix_ns` nanoseconds since the epoch (microsecond grain)."""
        await self._empty("SetGuestDateTime", agent_pb2.SetGuestDateTimeRequest(
            Sec=unix_ns // 1_000_000_000, Usec=unix_ns % 1_000_000_000 // 1000), timeout)

    async def guest_details(self, *, timeout: float | None = SANDBOX_TIMEOUT
                            ) -> agent_pb2.GuestDetailsResponse:
        """The guest's kernel, agent, memory and times, each within its bounds
        (`guestreplies.guest_details`)."""
        return guestreplies.guest_details(await self.call(
            "GetGuestDetails", agent_pb2.GuestDetailsRequest(), agent_pb2.GuestDetailsResponse,
            timeout=timeout))

    async def health(self, *, timeout: float | None = SANDBOX_TIMEOUT) -> bool:
        """Whether the agent says it is serving."""
        response = await self.ttrpc.call(HEALTH, "Check", health_pb2.CheckRequest(),
                                         health_pb2.HealthCheckResponse, timeout=timeout)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    # --- the network ---------------------------------------------------------------------------

    async def update_interface(self, interface: kata_types_pb2.Interface, *,
                               timeout: float | None = SANDBOX_TIMEOUT
                               ) -> kata_types_pb2.Interface:
        """Configure the guest device with the interface's MAC: name, MTU, addresses."""
        return await self.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(
            interface=interface), kata_types_pb2.Interface, timeout=timeout)

    async def update_routes(self, routes: agent_pb2.Routes, *,
                            timeout: float | None = SANDBOX_TIMEOUT) -> agent_pb2.Routes:
        return await self.call("UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=routes),
                               agent_pb2.Routes, timeout=timeout)

    async def add_arp_neighbors(self, neighbors: agent_pb2.ARPNeighbors, *,
                                timeout: float | None = SANDBOX_TIMEOUT) -> None:
        await self._empty("AddARPNeighbors", agent_pb2.AddARPNeighborsRequest(
            neighbors=neighbors), timeout)

    # --- templates (cocoon.GuestAgent) ---------------------------------------------------------

    async def trim_memory(self, keep_free: int, *, timeout: float | None = GUEST_TIMEOUT
                          ) -> guest_pb2.TrimMemoryResponse:
        """Before a template is saved: free, compact and zero the guest's memory, leaving
        `keep_free` bytes untouched."""
        return await self.ttrpc.call(GUEST, "TrimMemory",
                                     guest_pb2.TrimMemoryRequest(keep_free_bytes=keep_free),
                                     guest_pb2.TrimMemoryResponse, timeout=timeout)

    async def warm_up(self, rootfs: str = "", *, timeout: float | None = GUEST_TIMEOUT) -> float:
        """Run one throwaway container through the agent (in `rootfs`, a tree in the guest, or
        in an empty tree with the guest's /usr); the seconds it took."""
        response = await self.ttrpc.call(GUEST, "WarmUp", guest_pb2.WarmUpRequest(rootfs=rootfs),
                                         guest_pb2.WarmUpResponse, timeout=timeout)
        return response.seconds

    # --- checkpoint and restore (cocoon.GuestAgent; see agent/checkpoint.py) ---------------------

    async def checkpoint_container(self, container_id: str, image_dir: str, *,
                                   work_dir: str = "", leave_running: bool = False,
                                   tcp_established: bool = False, file_locks: bool = False,
                                   timeout: float | None = CRIU_TIMEOUT) -> None:
        """CRIU dumps the container's processes into `image_dir` (a guest path in the share);
        unless `leave_running`, they are killed once dumped."""
        await self.ttrpc.call(GUEST, "CheckpointContainer", guest_pb2.CheckpointContainerRequest(
            container_id=container_id, leave_running=leave_running,
            criu=guest_pb2.CriuOptions(image_dir=image_dir, work_dir=work_dir,
                                       tcp_established=tcp_established, file_locks=file_locks)),
            guest_pb2.CheckpointContainerResponse, timeout=timeout)

    async def restore_container(self, container_id: str, oci: kata_oci_pb2.Spec,
                                image_dir: str, *, work_dir: str = "",
                                tcp_established: bool = False, file_locks: bool = False,
                                timeout: float | None = CRIU_TIMEOUT) -> int:
        """A running container made of the processes dumped in `image_dir`; the guest pid of
        its init (range-checked)."""
        request = guest_pb2.RestoreContainerRequest(
            container_id=container_id, OCI=oci,
            criu=guest_pb2.CriuOptions(image_dir=image_dir, work_dir=work_dir,
                                       tcp_established=tcp_established, file_locks=file_locks))
        response = await self.ttrpc.call(GUEST, "RestoreContainer", request,
                                         guest_pb2.RestoreContainerResponse, timeout=timeout)
        if not 0 < response.pid < PID_MAX:
            raise AgentError(f"the agent restored container {container_id} with pid "
                             f"{response.pid}, out of range", pid=response.pid)
        return int(response.pid)

    # --- the port mirror (cocoon.GuestAgent; see sandbox/portmirror.py) --------------------------

    async def listening_ports(self, known: Iterable[int], wait: float) -> list[int]:
        """The TCP ports listening in the guest, once they differ from `known` or after `wait`
        seconds. What the guest says is checked: ports in range, each once, at most
        MAX_MIRRORED_PORTS of them."""
        response = await self.ttrpc.call(
            GUEST, "ListeningPorts",
            guest_pb2.ListeningPortsRequest(known=sorted(known), wait_ms=int(wait * 1000)),
            guest_pb2.ListeningPortsResponse, timeout=wait + QUICK_TIMEOUT)
        return sorted({p for p in response.ports if 0 < p < 65536})[:MAX_MIRRORED_PORTS]

    async def port_connect(self, port: int, *, timeout: float | None = QUICK_TIMEOUT) -> int:
        """Open a connection to `port` on the guest's loopback; its number."""
        response = await self.ttrpc.call(GUEST, "PortConnect",
                                         guest_pb2.PortConnectRequest(port=port),
                                         guest_pb2.PortConnectResponse, timeout=timeout)
        return response.connection

    async def port_write(self, connection: int, data: bytes, *,
                         timeout: float | None = None) -> None:
        """Hand `data` to the guest connection; returns once the guest's socket took it all."""
        response = await self.ttrpc.call(GUEST, "PortWrite", guest_pb2.PortWriteRequest(
            connection=connection, data=data), guest_pb2.PortWriteResponse, timeout=timeout)
        if response.len != len(data):
            raise AgentError(f"the guest took {response.len} of {len(data)} bytes for "
                             f"forwarded connection {connection}")

    async def port_read(self, connection: int, size: int = PORT_CHUNK, *,
                        timeout: float | None = None) -> bytes:
        """The connection's next bytes (at most `size`); b"" at the end of the stream."""
        response = await self.ttrpc.call(GUEST, "PortRead", guest_pb2.PortReadRequest(
            connection=connection, len=size), guest_pb2.PortReadResponse, timeout=timeout)
        if len(response.data) > size:
            raise AgentError(f"the guest sent {len(response.data)} bytes for a read of {size}")
        return response.data

    async def port_close(self, connection: int, *, write_only: bool = False,
                         timeout: float | None = QUICK_TIMEOUT) -> None:
        """Shut the guest connection's sending side (`write_only`), or close it."""
        await self.ttrpc.call(GUEST, "PortClose", guest_pb2.PortCloseRequest(
            connection=connection, write_only=write_only), guest_pb2.PortCloseResponse,
            timeout=timeout)

    # --- stdio ports (cocoon.GuestAgent; see sandbox/stdioport.py) -------------------------------

    async def bind_stream(self, container_id: str, exec_id: str, stderr: bool, *,
                          timeout: float | None = QUICK_TIMEOUT) -> StreamPort | None:
        """Move the process's stdout (or stderr) to a stdio port; None if none is free."""
        response = await self.ttrpc.call(GUEST, "BindStream", guest_pb2.BindStreamRequest(
            container_id=container_id, exec_id=exec_id, stderr=stderr),
            guest_pb2.BindStreamResponse, timeout=timeout)
        return self._stream_port(response)

    @staticmethod
    def _stream_port(response: guest_pb2.BindStreamResponse) -> StreamPort | None:
        if not response.bound:
            return None
        if response.port >= MAX_STDIO_PORTS or len(response.token) != STDIO_TOKEN_SIZE:
            raise AgentError(f"the guest bound a stream to port {response.port} with a "
                             f"{len(response.token)}-byte token")
        return StreamPort(response.port, response.token)

    async def stream_end(self, container_id: str, exec_id: str, stderr: bool, *,
                         stdin: bool = False, timeout: float | None = None) -> int:
        """Once the bound stream ended: the bytes the guest wrote to its port (0 for stdin:
        its copy ended, and the host stops sending)."""
        response = await self.ttrpc.call(GUEST, "StreamEnd", guest_pb2.StreamEndRequest(
            container_id=container_id, exec_id=exec_id, stderr=stderr, stdin=stdin),
            guest_pb2.StreamEndResponse, timeout=timeout)
        return response.bytes

    async def bind_stdin(self, container_id: str, exec_id: str, *,
                         timeout: float | None = QUICK_TIMEOUT) -> StreamPort | None:
        """Feed the process's stdin from a stdio port; None if none is free."""
        response = await self.ttrpc.call(GUEST, "BindStdin", guest_pb2.BindStdinRequest(
            container_id=container_id, exec_id=exec_id), guest_pb2.BindStreamResponse,
            timeout=timeout)
        return self._stream_port(response)

    # --- the debug console (cocoon.GuestAgent) --------------------------------------------------

    async def enable_debug_console(self, *, timeout: float | None = QUICK_TIMEOUT) -> None:
        """Have the agent serve `cocoon debug-console` on the VM's debug port."""
        await self.ttrpc.call(GUEST, "EnableDebugConsole",
                              guest_pb2.EnableDebugConsoleRequest(),
                              guest_pb2.EnableDebugConsoleResponse, timeout=timeout)

    # --- metrics (cocoon.GuestAgent) ------------------------------------------------------------

    async def guest_stats(self, *, timeout: float | None = QUICK_TIMEOUT) -> GuestStats:
        """The guest's memory, CPU time and load; what the guest says is bounded and checked."""
        response = await self.ttrpc.call(GUEST, "GuestStats", guest_pb2.GuestStatsRequest(),
                                         guest_pb2.GuestStatsResponse, timeout=timeout)
        return GuestStats.checked(response)


@dataclass(frozen=True)
class GuestStats:
    memory_total_bytes: int
    memory_available_bytes: int
    cpu_user_seconds: float
    cpu_system_seconds: float
    cpu_idle_seconds: float
    load1: float
    load5: float
    load15: float
    cpus: int

    @classmethod
    def checked(cls, response: guest_pb2.GuestStatsResponse) -> GuestStats:
        """Refuse figures no guest can have (the guest is untrusted: a lie must not reach a
        dashboard as a plausible number, nor break the exposition with NaN or infinity)."""
        seconds = (response.cpu_user_seconds, response.cpu_system_seconds,
                   response.cpu_idle_seconds)
        loads = (response.load1, response.load5, response.load15)
        if not all(math.isfinite(v) and 0 <= v < MAX_GUEST_CPU_SECONDS for v in seconds):
            raise AgentError(f"the guest reported impossible CPU times {seconds}")
        if not all(math.isfinite(v) and 0 <= v < MAX_GUEST_LOAD for v in loads):
            raise AgentError(f"the guest reported an impossible load {loads}")
        if not (0 < response.memory_total_bytes <= MAX_GUEST_MEMORY
                and response.memory_available_bytes <= response.memory_total_bytes):
            raise AgentError(f"the guest reported impossible memory figures "
                             f"({response.memory_available_bytes} of "
                             f"{response.memory_total_bytes} bytes available)")
        if not 0 < response.cpus <= MAX_GUEST_CPUS:
            raise AgentError(f"the guest reported {response.cpus} CPUs")
        return cls(response.memory_total_bytes, response.memory_available_bytes, *seconds,
                   *loads, response.cpus)
