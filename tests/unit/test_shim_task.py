"""The containerd task service's verbs as agent calls: each request of containerd's becomes the
typed call it means, answered by an in-process agent (no VM); the calls that may fail quietly
(a process or a pod that is gone) are logged, not raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from google.protobuf import any_pb2
from google.protobuf.message import Message

from cocoon.errors import RPCError, SandboxError
from cocoon.protocols.gen import agent_pb2, kata_oci_pb2
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.sandbox.agentclient import AgentClient
from cocoon.shim.address import PodRef
from cocoon.shim.events import Publisher
from cocoon.shim.process import CREATED, PAUSED, RUNNING, ShimContainer, ShimProcess
from cocoon.shim.stdio import StdioPaths, open_stdio
from cocoon.shim.task import TaskService
from cocoon.ttrpc.server import CallContext
from cocoon.ttrpc.status import StatusCode
from tests.framework.fakeagent import FakeAgent, connected

CTX = cast(CallContext, None)  # the verbs below do not look at their call's context


class FakeShare:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove_container(self, container_id: str) -> None:
        self.removed.append(container_id)


class FakePod:
    """What the task service needs of a pod: its agent (or none: the VM is not running), its
    share, and a stop."""

    def __init__(self, agent: AgentClient | None) -> None:
        self._agent = agent
        self.id = "pod1"
        self.share = FakeShare()
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True

    @property
    def agent(self) -> AgentClient:
        if self._agent is None:
            raise SandboxError("pod pod1: its VM is not running", pod=self.id)
        return self._agent


def serve(agent: FakeAgent, scenario: Callable[[TaskService], Awaitable[Any]],
          running: bool = True) -> Any:
    """Run `scenario` against a task service holding one running container, c1."""
    async def go() -> Any:
        async with connected(agent) as (client, _):
            tasks = TaskService(FakePod(client if running else None),  # type: ignore[arg-type]
                                Publisher("", "default"), lambda: None)
            init = ShimProcess("c1", "", open_stdio(StdioPaths()), status=RUNNING)
            tasks.containers["c1"] = ShimContainer("c1", Path("/bundle"), PodRef("pod1", True),
                                                   init)
            return await asyncio.wait_for(scenario(tasks), 30)
    return asyncio.run(go())


def requests(agent: FakeAgent) -> list[tuple[str, Message]]:
    return [(method, request) for _, method, request in agent.calls]


def test_kill_pause_resume_and_resize_are_the_agents_calls() -> None:
    agent = FakeAgent()

    async def scenario(tasks: TaskService) -> None:
        await tasks.Kill(api.KillRequest(id="c1", signal=15, all=True), CTX)
        await tasks.Pause(api.PauseRequest(id="c1"), CTX)
        assert tasks.containers["c1"].init.status == PAUSED
        await tasks.Resume(api.ResumeRequest(id="c1"), CTX)
        assert tasks.containers["c1"].init.status == RUNNING
        await tasks.ResizePty(api.ResizePtyRequest(id="c1", width=80, height=24), CTX)

    serve(agent, scenario)
    assert requests(agent) == [
        ("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c1", signal=15, all=True)),
        ("PauseContainer", agent_pb2.PauseContainerRequest(container_id="c1")),
        ("ResumeContainer", agent_pb2.ResumeContainerRequest(container_id="c1")),
        ("TtyWinResize", agent_pb2.TtyWinResizeRequest(container_id="c1", row=24, column=80))]


def test_update_sends_the_resources_as_the_agents_message() -> None:
    agent = FakeAgent()

    async def scenario(tasks: TaskService) -> None:
        resources = any_pb2.Any(value=b'{"pids": {"limit": 20}}')
        await tasks.Update(api.UpdateTaskRequest(id="c1", resources=resources), CTX)

    serve(agent, scenario)
    [(method, request)] = requests(agent)
    assert method == "UpdateContainer"
    assert request == agent_pb2.UpdateContainerRequest(
        container_id="c1", resources=kata_oci_pb2.LinuxResources(
            Pids=kata_oci_pb2.LinuxPids(Limit=20)))


def test_pids_and_stats_come_from_the_agent() -> None:
    stats = agent_pb2.StatsContainerResponse(cgroup_stats=agent_pb2.CgroupStats(
        pids_stats=agent_pb2.PidsStats(current=2, limit=20)))
    agent = FakeAgent(replies={
        "ListProcesses": agent_pb2.ListProcessesResponse(process_list=b"[1, 7]"),
        "StatsContainer": stats})

    async def scenario(tasks: TaskService) -> tuple[api.PidsResponse, api.StatsResponse]:
        return (await tasks.Pids(api.PidsRequest(id="c1"), CTX),
                await tasks.Stats(api.StatsRequest(id="c1"), CTX))

    pids, metrics = serve(agent, scenario)
    assert [p.pid for p in pids.processes] == [1, 7]
    assert metrics.stats.type_url.endswith("Metrics")
    assert requests(agent) == [
        ("ListProcesses", agent_pb2.ListProcessesRequest(container_id="c1", format="json")),
        ("StatsContainer", agent_pb2.StatsContainerRequest(container_id="c1"))]


def test_close_io_without_a_stdin_pump_closes_the_guests_stdin_quietly() -> None:
    agent = FakeAgent(errors={"CloseStdin": RPCError(StatusCode.NOT_FOUND, "no process")})

    async def scenario(tasks: TaskService) -> None:
        await tasks.CloseIO(api.CloseIORequest(id="c1", stdin=True), CTX)

    serve(agent, scenario)  # the process is gone: nothing is raised
    assert requests(agent) == [("CloseStdin", agent_pb2.CloseStdinRequest(container_id="c1"))]


def test_a_quiet_call_to_a_pod_that_is_not_running_is_only_logged() -> None:
    agent = FakeAgent()

    async def scenario(tasks: TaskService) -> None:
        await tasks.CloseIO(api.CloseIORequest(id="c1", stdin=True), CTX)

    serve(agent, scenario, running=False)
    assert agent.calls == []


def test_a_task_created_from_a_checkpoint_and_never_started_is_deleted_at_once() -> None:
    """Restored at Start (as runc's shim), it is not in the guest before: deleting it sends the
    agent nothing, waits for no exit (it waited 5 s for a kill's), and reports status 0."""
    agent = FakeAgent()

    async def scenario(tasks: TaskService) -> tuple[api.DeleteResponse, float]:
        container = tasks.containers["c1"]
        container.init.status = CREATED
        container.restore = (Path("/checkpoint"), kata_oci_pb2.Spec())
        started = time.monotonic()
        deleted = await tasks.Delete(api.DeleteRequest(id="c1"), CTX)
        return deleted, time.monotonic() - started

    deleted, seconds = serve(agent, scenario)
    assert deleted.exit_status == 0
    assert seconds < 1.0
    assert agent.calls == []
