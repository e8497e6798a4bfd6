"""`cocoon.GuestAgent`: Cocoon's own calls to the agent, beside Kata's AgentService."""

from __future__ import annotations

from cocoon.agent import checkpoint, debugconsole, gueststats, ports, stdioports, trim, warmup
from cocoon.agent.container import ContainerError
from cocoon.agent.service import AgentService
from cocoon.agent.stdinport import StdinBinding
from cocoon.agent.stdio import InputStream, OutputStream
from cocoon.protocols.gen import guest_pb2
from cocoon.ttrpc.server import CallContext
from cocoon.ttrpc.status import StatusCode


class GuestAgentService:
    def __init__(self, agent: AgentService) -> None:
        self.agent = agent
        self.ports = ports.Ports()
        self.stdio_ports = stdioports.StdioPorts()
        self.debug_console = debugconsole.DebugConsole()

    async def TrimMemory(self, request: guest_pb2.TrimMemoryRequest,
                         ctx: CallContext) -> guest_pb2.TrimMemoryResponse:
        return trim.trim(request.keep_free_bytes or trim.DEFAULT_KEEP_FREE)

    async def WarmUp(self, request: guest_pb2.WarmUpRequest,
                     ctx: CallContext) -> guest_pb2.WarmUpResponse:
        return guest_pb2.WarmUpResponse(
            seconds=await warmup.warm_up(self.agent, request.rootfs))

    # --- the port mirror (agent/ports.py) ------------------------------------------------------

    async def ListeningPorts(self, request: guest_pb2.ListeningPortsRequest,
                             ctx: CallContext) -> guest_pb2.ListeningPortsResponse:
        found = await self.ports.watch(set(request.known), request.wait_ms / 1000)
        return guest_pb2.ListeningPortsResponse(ports=found)

    async def PortConnect(self, request: guest_pb2.PortConnectRequest,
                          ctx: CallContext) -> guest_pb2.PortConnectResponse:
        return guest_pb2.PortConnectResponse(connection=await self.ports.connect(request.port))

    async def PortWrite(self, request: guest_pb2.PortWriteRequest,
                        ctx: CallContext) -> guest_pb2.PortWriteResponse:
        return guest_pb2.PortWriteResponse(
            len=await self.ports.write(request.connection, request.data))

    async def PortRead(self, request: guest_pb2.PortReadRequest,
                       ctx: CallContext) -> guest_pb2.PortReadResponse:
        return guest_pb2.PortReadResponse(
            data=await self.ports.read(request.connection, request.len))

    async def PortClose(self, request: guest_pb2.PortCloseRequest,
                        ctx: CallContext) -> guest_pb2.PortCloseResponse:
        await self.ports.close(request.connection, request.write_only)
        return guest_pb2.PortCloseResponse()

    # --- stdio ports (agent/stdioports.py) -----------------------------------------------------

    def _stream(self, container_id: str, exec_id: str, stderr: bool) -> OutputStream:
        process = self.agent.state.container(container_id).process(exec_id)
        stream = process.stderr if stderr else process.stdout
        if stream is None or process.terminal:
            raise ContainerError(StatusCode.FAILED_PRECONDITION,
                                 f"{container_id}/{exec_id or 'init'}: no such stream to bind "
                                 "(a terminal's output stays on ReadStdout)")
        return stream

    async def BindStream(self, request: guest_pb2.BindStreamRequest,
                         ctx: CallContext) -> guest_pb2.BindStreamResponse:
        stream = self._stream(request.container_id, request.exec_id, request.stderr)
        if stream.detached:
            raise ContainerError(StatusCode.FAILED_PRECONDITION, "the stream is already bound")
        binding = self.stdio_ports.bind(stream)
        if binding is None:
            return guest_pb2.BindStreamResponse(bound=False)
        return guest_pb2.BindStreamResponse(bound=True, port=binding.port, token=binding.token)

    async def StreamEnd(self, request: guest_pb2.StreamEndRequest,
                        ctx: CallContext) -> guest_pb2.StreamEndResponse:
        binding: stdioports.Binding | StdinBinding | None
        if request.stdin:
            binding = self.stdio_ports.stdin_binding(
                self._stdin(request.container_id, request.exec_id))
        else:
            binding = self.stdio_ports.binding(
                self._stream(request.container_id, request.exec_id, request.stderr))
        if binding is None:
            raise ContainerError(StatusCode.FAILED_PRECONDITION, "the stream is not bound")
        await binding.ended.wait()
        return guest_pb2.StreamEndResponse(bytes=binding.written)

    def _stdin(self, container_id: str, exec_id: str) -> InputStream:
        process = self.agent.state.container(container_id).process(exec_id)
        if process.stdin is None or process.terminal:
            raise ContainerError(StatusCode.FAILED_PRECONDITION,
                                 f"{container_id}/{exec_id or 'init'}: no stdin to bind "
                                 "(a terminal's input stays on WriteStdin)")
        return process.stdin

    async def BindStdin(self, request: guest_pb2.BindStdinRequest,
                        ctx: CallContext) -> guest_pb2.BindStreamResponse:
        stdin = self._stdin(request.container_id, request.exec_id)
        if stdin.detached:
            raise ContainerError(StatusCode.FAILED_PRECONDITION, "stdin is already bound")
        if stdin.fd is None:
            raise ContainerError(StatusCode.FAILED_PRECONDITION, "stdin is closed")
        binding = await self.stdio_ports.bind_stdin(stdin, self.agent.state.reaper)
        if binding is None:
            return guest_pb2.BindStreamResponse(bound=False)
        return guest_pb2.BindStreamResponse(bound=True, port=binding.port, token=binding.token)

    # --- checkpoint and restore (agent/checkpoint.py) ----------------------------------------

    async def CheckpointContainer(self, request: guest_pb2.CheckpointContainerRequest,
                                  ctx: CallContext) -> guest_pb2.CheckpointContainerResponse:
        state = self.agent.state
        await checkpoint.checkpoint(state.container(request.container_id), request.criu,
                                    request.leave_running, state.reaper)
        return guest_pb2.CheckpointContainerResponse()

    async def RestoreContainer(self, request: guest_pb2.RestoreContainerRequest,
                               ctx: CallContext) -> guest_pb2.RestoreContainerResponse:
        await self.agent.restore(request.container_id, request.OCI, request.criu)
        container = self.agent.state.container(request.container_id)
        pid = container.init.pid if container.init is not None else 0
        return guest_pb2.RestoreContainerResponse(pid=pid or 0)

    # --- metrics --------------------------------------------------------------------------------

    async def GuestStats(self, request: guest_pb2.GuestStatsRequest,
                         ctx: CallContext) -> guest_pb2.GuestStatsResponse:
        return gueststats.read()

    # --- the debug console (agent/debugconsole.py) -------------------------------------------

    async def EnableDebugConsole(self, request: guest_pb2.EnableDebugConsoleRequest,
                                 ctx: CallContext) -> guest_pb2.EnableDebugConsoleResponse:
        try:
            self.debug_console.enable()
        except OSError as err:
            raise ContainerError(StatusCode.FAILED_PRECONDITION,
                                 f"no debug console port in this VM: {err}") from err
        return guest_pb2.EnableDebugConsoleResponse()
