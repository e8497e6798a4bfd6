"""The typed agent client against an in-process ttrpc agent: each method sends the request the
agent expects and hands back a plain value; errors keep their type and status code; calls that
wait on a guest process have no deadline, every other call has one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.message import Message

from cocoon.errors import AgentError, ConnectionLostError, RPCError
from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2, kata_oci_pb2, kata_types_pb2
from cocoon.sandbox import agentclient
from cocoon.sandbox.agentclient import AGENT, GUEST, HEALTH, AgentClient, GuestStats
from cocoon.ttrpc.status import StatusCode
from tests.framework.fakeagent import FakeAgent, connected

SPEC = kata_oci_pb2.Spec(Hostname="box", Process=kata_oci_pb2.Process(Args=["true"]))
PROCESS = kata_oci_pb2.Process(Args=["sh", "-c", "echo hi"], Terminal=True)
RESOURCES = kata_oci_pb2.LinuxResources(Pids=kata_oci_pb2.LinuxPids(Limit=20))
INTERFACE = kata_types_pb2.Interface(name="eth0", hwAddr="8a:1b:2c:3d:4e:5f", mtu=1450)
ROUTES = agent_pb2.Routes(Routes=[kata_types_pb2.Route(gateway="10.88.0.1", device="eth0")])
NEIGHBORS = agent_pb2.ARPNeighbors(ARPNeighbors=[kata_types_pb2.ARPNeighbor(
    toIPAddress=kata_types_pb2.IPAddress(address="10.88.0.9"), device="eth0")])
STORAGE = agent_pb2.Storage(driver="virtio-fs", source="cocoon", fstype="virtiofs",
                            mount_point="/run/cocoon/shared")
STATS = agent_pb2.StatsContainerResponse(cgroup_stats=agent_pb2.CgroupStats(
    pids_stats=agent_pb2.PidsStats(current=3, limit=20)))
DETAILS = agent_pb2.GuestDetailsResponse(kernel_release="6.1.0-cloud-amd64",
                                         boot_id="0b5e4c47-6c1e-4d8e-9a59-05f4b2e9c7a1")
TRIM = guest_pb2.TrimMemoryResponse(mem_free_bytes=1 << 20, zeroed_bytes=5 << 20, seconds=0.5)


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)
    return asyncio.run(bounded())


Call = Callable[[AgentClient], Awaitable[Any]]


@dataclass(frozen=True)
class Case:
    name: str                    # the AgentClient method
    call: Call
    service: str
    method: str                  # the ttrpc method
    request: Message             # what the agent must receive
    reply: Message | None = None  # what it answers (None: an empty message)
    result: Any = None           # what the client returns
    waits: bool = False          # waits on a guest process: no deadline by default


CASES = [
    Case("create_container", lambda a: a.create_container("c1", SPEC), AGENT, "CreateContainer",
         agent_pb2.CreateContainerRequest(container_id="c1", OCI=SPEC)),
    Case("start_container", lambda a: a.start_container("c1"), AGENT, "StartContainer",
         agent_pb2.StartContainerRequest(container_id="c1")),
    Case("remove_container", lambda a: a.remove_container("c1"), AGENT, "RemoveContainer",
         agent_pb2.RemoveContainerRequest(container_id="c1", timeout=5)),
    Case("remove_container", lambda a: a.remove_container("c1", stop_timeout=1), AGENT,
         "RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c1", timeout=1)),
    Case("pause_container", lambda a: a.pause_container("c1"), AGENT, "PauseContainer",
         agent_pb2.PauseContainerRequest(container_id="c1")),
    Case("resume_container", lambda a: a.resume_container("c1"), AGENT, "ResumeContainer",
         agent_pb2.ResumeContainerRequest(container_id="c1")),
    Case("update_container", lambda a: a.update_container("c1", RESOURCES), AGENT,
         "UpdateContainer", agent_pb2.UpdateContainerRequest(container_id="c1",
                                                             resources=RESOURCES)),
    Case("stats_container", lambda a: a.stats_container("c1"), AGENT, "StatsContainer",
         agent_pb2.StatsContainerRequest(container_id="c1"), STATS, STATS),
    Case("list_processes", lambda a: a.list_processes("c1"), AGENT, "ListProcesses",
         agent_pb2.ListProcessesRequest(container_id="c1", format="table"),
         agent_pb2.ListProcessesResponse(process_list=b"PID CMD\n1 sh\n"), b"PID CMD\n1 sh\n"),
    Case("list_processes", lambda a: a.list_processes("c1", "json"), AGENT, "ListProcesses",
         agent_pb2.ListProcessesRequest(container_id="c1", format="json"),
         agent_pb2.ListProcessesResponse(process_list=b"[1, 7]"), b"[1, 7]"),
    Case("list_pids", lambda a: a.list_pids("c1"), AGENT, "ListProcesses",
         agent_pb2.ListProcessesRequest(container_id="c1", format="json"),
         agent_pb2.ListProcessesResponse(process_list=b"[1, 7]"), [1, 7]),
    Case("get_oom_event", lambda a: a.get_oom_event(), AGENT, "GetOOMEvent",
         agent_pb2.GetOOMEventRequest(), agent_pb2.OOMEvent(container_id="c2"), "c2",
         waits=True),
    Case("exec_process", lambda a: a.exec_process("c1", "e1", PROCESS), AGENT, "ExecProcess",
         agent_pb2.ExecProcessRequest(container_id="c1", exec_id="e1", process=PROCESS)),
    Case("signal_process", lambda a: a.signal_process("c1", "e1", 15), AGENT, "SignalProcess",
         agent_pb2.SignalProcessRequest(container_id="c1", exec_id="e1", signal=15)),
    Case("signal_process", lambda a: a.signal_process("c1", "", 9, all=True), AGENT,
         "SignalProcess", agent_pb2.SignalProcessRequest(container_id="c1", signal=9, all=True)),
    Case("wait_process", lambda a: a.wait_process("c1", "e1"), AGENT, "WaitProcess",
         agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e1"),
         agent_pb2.WaitProcessResponse(status=137), 137, waits=True),
    Case("read_stdout", lambda a: a.read_stdout("c1", "e1"), AGENT, "ReadStdout",
         agent_pb2.ReadStreamRequest(container_id="c1", exec_id="e1", len=1 << 20),
         agent_pb2.ReadStreamResponse(data=b"out"), b"out", waits=True),
    Case("read_stdout", lambda a: a.read_stdout("c1"), AGENT, "ReadStdout",
         agent_pb2.ReadStreamRequest(container_id="c1", len=1 << 20), None, b"", waits=True),
    Case("read_stderr", lambda a: a.read_stderr("c1", "", 10), AGENT, "ReadStderr",
         agent_pb2.ReadStreamRequest(container_id="c1", len=10),
         agent_pb2.ReadStreamResponse(data=b"err"), b"err", waits=True),
    Case("write_stdin", lambda a: a.write_stdin("c1", "e1", b"input"), AGENT, "WriteStdin",
         agent_pb2.WriteStreamRequest(container_id="c1", exec_id="e1", data=b"input"),
         agent_pb2.WriteStreamResponse(len=5), 5, waits=True),
    Case("close_stdin", lambda a: a.close_stdin("c1", "e1"), AGENT, "CloseStdin",
         agent_pb2.CloseStdinRequest(container_id="c1", exec_id="e1")),
    Case("tty_win_resize", lambda a: a.tty_win_resize("c1", "e1", 24, 80), AGENT,
         "TtyWinResize", agent_pb2.TtyWinResizeRequest(container_id="c1", exec_id="e1",
                                                       row=24, column=80)),
    Case("create_sandbox", lambda a: a.create_sandbox("box", "sb1", [STORAGE]), AGENT,
         "CreateSandbox", agent_pb2.CreateSandboxRequest(hostname="box", sandbox_id="sb1",
                                                         storages=[STORAGE])),
    Case("destroy_sandbox", lambda a: a.destroy_sandbox(), AGENT, "DestroySandbox",
         agent_pb2.DestroySandboxRequest()),
    Case("reseed_random_dev", lambda a: a.reseed_random_dev(b"\x01" * 16), AGENT,
         "ReseedRandomDev", agent_pb2.ReseedRandomDevRequest(data=b"\x01" * 16)),
    Case("set_guest_date_time", lambda a: a.set_guest_date_time(1_700_000_000_123_456_789),
         AGENT, "SetGuestDateTime",
         agent_pb2.SetGuestDateTimeRequest(Sec=1_700_000_000, Usec=123_456)),
    Case("guest_details", lambda a: a.guest_details(), AGENT, "GetGuestDetails",
         agent_pb2.GuestDetailsRequest(), DETAILS, DETAILS),
    Case("health", lambda a: a.health(), HEALTH, "Check", health_pb2.CheckRequest(),
         health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING), True),
    Case("health", lambda a: a.health(), HEALTH, "Check", health_pb2.CheckRequest(),
         health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING),
         False),
    Case("update_interface", lambda a: a.update_interface(INTERFACE), AGENT, "UpdateInterface",
         agent_pb2.UpdateInterfaceRequest(interface=INTERFACE), INTERFACE, INTERFACE),
    Case("update_routes", lambda a: a.update_routes(ROUTES), AGENT, "UpdateRoutes",
         agent_pb2.UpdateRoutesRequest(routes=ROUTES), ROUTES, ROUTES),
    Case("add_arp_neighbors", lambda a: a.add_arp_neighbors(NEIGHBORS), AGENT,
         "AddARPNeighbors", agent_pb2.AddARPNeighborsRequest(neighbors=NEIGHBORS)),
    Case("trim_memory", lambda a: a.trim_memory(16 << 20), GUEST, "TrimMemory",
         guest_pb2.TrimMemoryRequest(keep_free_bytes=16 << 20), TRIM, TRIM),
    Case("warm_up", lambda a: a.warm_up(), GUEST, "WarmUp", guest_pb2.WarmUpRequest(),
         guest_pb2.WarmUpResponse(seconds=0.25), 0.25),
    Case("checkpoint_container",
         lambda a: a.checkpoint_container("c", "/run/cocoon/shared/c/checkpoint/images",
                                          leave_running=True, file_locks=True),
         GUEST, "CheckpointContainer", guest_pb2.CheckpointContainerRequest(
             container_id="c", leave_running=True, criu=guest_pb2.CriuOptions(
                 image_dir="/run/cocoon/shared/c/checkpoint/images", file_locks=True))),
    Case("restore_container",
         lambda a: a.restore_container("c", SPEC, "/i", work_dir="/w", tcp_established=True),
         GUEST, "RestoreContainer", guest_pb2.RestoreContainerRequest(
             container_id="c", OCI=SPEC, criu=guest_pb2.CriuOptions(
                 image_dir="/i", work_dir="/w", tcp_established=True)),
         guest_pb2.RestoreContainerResponse(pid=42), 42),
    Case("listening_ports", lambda a: a.listening_ports({80, 22}, 1.5), GUEST, "ListeningPorts",
         guest_pb2.ListeningPortsRequest(known=[22, 80], wait_ms=1500),
         guest_pb2.ListeningPortsResponse(ports=[8080, 0, 70000, 22, 22]), [22, 8080]),
    Case("port_connect", lambda a: a.port_connect(8080), GUEST, "PortConnect",
         guest_pb2.PortConnectRequest(port=8080), guest_pb2.PortConnectResponse(connection=3),
         3),
    Case("port_write", lambda a: a.port_write(3, b"GET /"), GUEST, "PortWrite",
         guest_pb2.PortWriteRequest(connection=3, data=b"GET /"),
         guest_pb2.PortWriteResponse(len=5), None, waits=True),
    Case("port_read", lambda a: a.port_read(3, 100), GUEST, "PortRead",
         guest_pb2.PortReadRequest(connection=3, len=100),
         guest_pb2.PortReadResponse(data=b"200 OK"), b"200 OK", waits=True),
    Case("port_close", lambda a: a.port_close(3, write_only=True), GUEST, "PortClose",
         guest_pb2.PortCloseRequest(connection=3, write_only=True)),
    Case("enable_debug_console", lambda a: a.enable_debug_console(), GUEST,
         "EnableDebugConsole", guest_pb2.EnableDebugConsoleRequest()),
    Case("guest_stats", lambda a: a.guest_stats(), GUEST, "GuestStats",
         guest_pb2.GuestStatsRequest(),
         guest_pb2.GuestStatsResponse(memory_total_bytes=1 << 28, memory_available_bytes=1 << 27,
                                      cpu_idle_seconds=5.0, load1=0.5, cpus=1),
         GuestStats(1 << 28, 1 << 27, 0.0, 0.0, 5.0, 0.5, 0.0, 0.0, 1)),
    Case("bind_stream", lambda a: a.bind_stream("c1", "e1", True), GUEST, "BindStream",
         guest_pb2.BindStreamRequest(container_id="c1", exec_id="e1", stderr=True),
         guest_pb2.BindStreamResponse(bound=True, port=3, token=b"t" * 16),
         agentclient.StreamPort(3, b"t" * 16)),
    Case("bind_stream", lambda a: a.bind_stream("c1", "", False), GUEST, "BindStream",
         guest_pb2.BindStreamRequest(container_id="c1"), guest_pb2.BindStreamResponse(), None),
    Case("stream_end", lambda a: a.stream_end("c1", "e1", False), GUEST, "StreamEnd",
         guest_pb2.StreamEndRequest(container_id="c1", exec_id="e1"),
         guest_pb2.StreamEndResponse(bytes=1 << 40), 1 << 40, waits=True),
    Case("stream_end", lambda a: a.stream_end("c1", "e1", False, stdin=True), GUEST,
         "StreamEnd", guest_pb2.StreamEndRequest(container_id="c1", exec_id="e1", stdin=True),
         guest_pb2.StreamEndResponse(), 0, waits=True),
    Case("bind_stdin", lambda a: a.bind_stdin("c1", "e1"), GUEST, "BindStdin",
         guest_pb2.BindStdinRequest(container_id="c1", exec_id="e1"),
         guest_pb2.BindStreamResponse(bound=True, port=7, token=b"s" * 16),
         agentclient.StreamPort(7, b"s" * 16)),
    Case("bind_stdin", lambda a: a.bind_stdin("c1", ""), GUEST, "BindStdin",
         guest_pb2.BindStdinRequest(container_id="c1"), guest_pb2.BindStreamResponse(), None),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{i}" for i, c in enumerate(CASES)])
def test_each_method_sends_its_request_and_returns_a_plain_value(case: Case) -> None:
    agent = FakeAgent()
    if case.reply is not None:
        agent.replies[case.method] = case.reply

    async def scenario() -> Any:
        async with connected(agent) as (client, _):
            return await case.call(client)

    assert run(scenario()) == case.result
    assert agent.calls == [(case.service, case.method, case.request)]


def test_a_restored_pid_out_of_range_is_refused() -> None:
    agent = FakeAgent(replies={"RestoreContainer": guest_pb2.RestoreContainerResponse(pid=0)})

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            await client.restore_container("c", SPEC, "/i")

    with pytest.raises(AgentError, match="restored container c with pid 0, out of range"):
        run(scenario())


def test_every_method_of_the_client_is_covered() -> None:
    public = {name for name, value in vars(AgentClient).items()
              if not name.startswith("_") and inspect.iscoroutinefunction(value)}
    assert public - {"close", "call"} == {case.name for case in CASES}


def test_only_calls_that_wait_on_a_guest_process_go_without_a_deadline() -> None:
    deadlines: dict[str, float | None] = {}

    agent = FakeAgent()
    for case in CASES:  # replies a client checks (PortWrite's length) must be the right ones
        if case.reply is not None:
            agent.replies.setdefault(case.method, case.reply)

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            call = client.ttrpc.call

            async def spy(service: str, method: str, request: Message, response_type: Any,
                          *, timeout: float | None = None) -> Any:
                deadlines[method] = timeout
                return await call(service, method, request, response_type, timeout=timeout)

            client.ttrpc.call = spy  # type: ignore[method-assign, assignment]
            for case in CASES:
                try:
                    await case.call(client)
                except AgentError:  # list_pids refuses the table format's reply: it was sent
                    assert case.name == "list_pids"

    run(scenario())
    waiting = {case.method for case in CASES if case.waits}
    assert {m for m, t in deadlines.items() if t is None} == waiting
    assert deadlines["StartContainer"] == agentclient.CALL_TIMEOUT
    assert deadlines["TtyWinResize"] == agentclient.QUICK_TIMEOUT


def test_what_the_guest_says_about_ports_is_checked() -> None:
    agent = FakeAgent()
    agent.replies["PortRead"] = guest_pb2.PortReadResponse(data=b"x" * 11)
    agent.replies["PortWrite"] = guest_pb2.PortWriteResponse(len=2)
    agent.replies["ListeningPorts"] = guest_pb2.ListeningPortsResponse(
        ports=list(range(1, 1000)))

    async def scenario() -> list[int]:
        async with connected(agent) as (client, _):
            with pytest.raises(AgentError, match="11 bytes for a read of 10"):
                await client.port_read(1, 10)
            with pytest.raises(AgentError, match="took 2 of 3 bytes"):
                await client.port_write(1, b"abc")
            return await client.listening_ports((), 0)

    assert run(scenario()) == list(range(1, agentclient.MAX_MIRRORED_PORTS + 1))


@pytest.mark.parametrize("reply", [
    guest_pb2.BindStreamResponse(bound=True, port=agentclient.MAX_STDIO_PORTS, token=b"t" * 16),
    guest_pb2.BindStreamResponse(bound=True, port=0, token=b"t" * 15),
])
def test_what_the_guest_says_about_stdio_ports_is_checked(
        reply: guest_pb2.BindStreamResponse) -> None:
    agent = FakeAgent()
    agent.replies["BindStream"] = reply

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            with pytest.raises(AgentError, match="bound a stream to port"):
                await client.bind_stream("c1", "", False)

    run(scenario())


@pytest.mark.parametrize("listing", [
    b"", b"not json", b"{}", b'["1"]', b"[1.5]", b"[true]", b"[0]", b"[-3]", b"[4194305]",
    b"[1, 1]", b"[" * 100_000, b"[" + b"1," * 70_000 + b"1]", b"\xff\xfe", b"[1e999]"])
def test_what_the_guest_says_about_pids_is_checked(listing: bytes) -> None:
    # regression: the shim's Pids turned these into ValueError, TypeError or OverflowError
    agent = FakeAgent(replies={"ListProcesses": agent_pb2.ListProcessesResponse(
        process_list=listing)})

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            with pytest.raises(AgentError, match="process list of c1"):
                await client.list_pids("c1")

    run(scenario())


def test_what_the_guest_says_about_stdio_sizes_is_checked() -> None:
    # regression: a read answered with more than asked, a write with more taken than given
    agent = FakeAgent(replies={
        "ReadStdout": agent_pb2.ReadStreamResponse(data=b"x" * 65),
        "ReadStderr": agent_pb2.ReadStreamResponse(data=b"x" * 65),
        "WriteStdin": agent_pb2.WriteStreamResponse(len=4)})

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            for read in (client.read_stdout, client.read_stderr):
                with pytest.raises(AgentError, match="65 bytes for a read of 64"):
                    await read("c1", "", 64)
            assert await read("c1", "", 65) == b"x" * 65
            with pytest.raises(AgentError, match="took 4 of 3 bytes"):
                await client.write_stdin("c1", "", b"abc")

    run(scenario())


def test_an_agent_error_keeps_its_status_code() -> None:
    agent = FakeAgent(errors={"SignalProcess": RPCError(StatusCode.NOT_FOUND, "no process e1"),
                              "CloseStdin": RPCError(StatusCode.FAILED_PRECONDITION, "closed")})

    async def scenario() -> list[BaseException | None]:
        async with connected(agent) as (client, _):
            return list(await asyncio.gather(client.signal_process("c1", "e1", 15),
                                             client.close_stdin("c1", "e1"),
                                             return_exceptions=True))

    signalled, closed = run(scenario())
    assert isinstance(signalled, RPCError) and signalled.code == StatusCode.NOT_FOUND
    assert "no process e1" in str(signalled)
    assert isinstance(closed, RPCError) and closed.code == StatusCode.FAILED_PRECONDITION


def test_a_deadline_given_by_the_caller_is_kept() -> None:
    agent = FakeAgent(delays={"WaitProcess": 5.0})

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            await client.wait_process("c1", timeout=0.05)

    with pytest.raises(RPCError) as err:
        run(scenario())
    assert err.value.code == StatusCode.DEADLINE_EXCEEDED


def test_a_lost_connection_fails_a_pending_call() -> None:
    agent = FakeAgent(delays={"WaitProcess": 30.0})

    async def scenario() -> None:
        async with connected(agent) as (client, agent_end):
            waiting = asyncio.create_task(client.wait_process("c1"))
            while not agent.calls:
                await asyncio.sleep(0.01)
            agent_end.transport.abort()  # the guest went away
            await waiting

    with pytest.raises(ConnectionLostError, match="the test agent"):
        run(scenario())
