"""Asking a running container's agent, through its sandbox monitor: the small verbs (kill,
pause, resume, update) and the queries the agent answers (its process table, statistics).

Only the sandbox and agent clients and the state model: `cocoon kill`, which engines call to
stop every container, imports this module and not `operations` and what that imports for
creation, the relays and teardown (QEMU, the launcher, the bundle model). What only one verb
needs beyond that (the OCI resources model of `update`) is imported by that verb.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cocoon.errors import ContainerStateError, RPCError
from cocoon.oci.state import ContainerState, StateStore, Status, require, validate_id
from cocoon.protocols.gen import agent_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout
from cocoon.ttrpc.status import StatusCode

T = TypeVar("T")


async def connect(state: ContainerState) -> SandboxClient:
    """A client of the container's sandbox (its monitor's socket)."""
    layout = Layout(Path(state.vm_dir))
    if not layout.monitor_socket.exists():
        raise ContainerStateError(f"container {state.id}: its VM is not running", id=state.id)
    return await SandboxClient.connect(layout.monitor_socket, timeout=10.0)


async def call_monitor(state: ContainerState,
                       call: Callable[[SandboxClient], Awaitable[T]]) -> T:
    """One call of the container's sandbox monitor, on a connection of its own."""
    client = await connect(state)
    try:
        return await call(client)
    finally:
        await client.close()


async def call_agent(state: ContainerState, call: Callable[[AgentClient], Awaitable[T]]) -> T:
    """One call of the container's agent, on a connection of its own:
    `await call_agent(state, lambda agent: agent.start_container(state.id))`."""
    client = await connect(state)
    try:
        return await call(client.agent)
    finally:
        await client.close()


def kill(store: StateStore, container_id: str, sig: int, all_processes: bool = False) -> None:
    """Send `sig` to the container's init process (or to all its processes), under its lock."""
    state = store.load(validate_id(container_id))
    with store.lock(state.id):
        state = store.load(state.id)
        status = state.current_status()
        require(status, status.can_kill(), state.id, "kill")
        try:
            asyncio.run(call_agent(state, lambda agent: agent.signal_process(
                state.id, "", sig, all=all_processes)))
        except RPCError as err:
            if err.code == StatusCode.NOT_FOUND:
                raise ContainerStateError(f"cannot kill container {state.id}: it is not "
                                          "running", id=state.id) from err
            raise


def pause(store: StateStore, container_id: str) -> None:
    """Freeze the container's processes (its guest cgroup), under its lock."""
    _freeze(store, container_id, pause=True)


def resume(store: StateStore, container_id: str) -> None:
    _freeze(store, container_id, pause=False)


def _freeze(store: StateStore, container_id: str, pause: bool) -> None:
    state = store.load(validate_id(container_id))
    with store.lock(state.id):
        state = store.load(state.id)
        status = state.current_status()
        require(status, status.can_pause() if pause else status.can_resume(), state.id,
                "pause" if pause else "resume")
        state.status = Status.PAUSED if pause else Status.RUNNING
        with store.staged(state):  # a state that cannot be written fails before the change
            if pause:
                asyncio.run(call_agent(state, lambda agent: agent.pause_container(state.id)))
            else:
                asyncio.run(call_agent(state, lambda agent: agent.resume_container(state.id)))


def update(store: StateStore, container_id: str, resources: dict[str, Any]) -> None:
    """Apply new resource limits (`linux.resources` as JSON) to the running container: its
    host cgroup (the VM's bound) and its cgroup in the guest."""
    from cocoon.hostcgroup import HostCgroup
    from cocoon.oci import convert
    from cocoon.oci.spec import LinuxResources

    state = store.load(validate_id(container_id))
    with store.lock(state.id):
        state = store.load(state.id)
        status = state.current_status()
        require(status, status.can_update(), state.id, "update")
        parsed = LinuxResources.from_dict(resources, "resources")
        proto = convert.resources_to_proto(parsed)
        host = HostCgroup.from_json(state.host_cgroup)
        if host is not None:
            host.apply(parsed)
        asyncio.run(call_agent(state, lambda agent: agent.update_container(state.id, proto)))


def guest_processes(store: StateStore, container_id: str) -> str:
    """The container's processes as the guest's ps(1) prints them."""
    state = store.load(validate_id(container_id))
    table = asyncio.run(call_agent(state, lambda agent: agent.list_processes(state.id)))
    return table.decode(errors="replace")


def stats(store: StateStore, container_id: str) -> agent_pb2.StatsContainerResponse:
    """The container's cgroup and network statistics, from the guest."""
    state = store.load(validate_id(container_id))
    status = state.current_status()
    require(status, status in (Status.RUNNING, Status.PAUSED, Status.CREATED), state.id,
            "get the statistics of")
    return asyncio.run(call_agent(state, lambda agent: agent.stats_container(state.id)))
