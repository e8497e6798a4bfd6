"""Asking a running container's agent, through its sandbox monitor, and `kill`.

Only the sandbox and agent clients: `cocoon kill`, which engines call to stop
every container, imports this module and not `operations`, which holds creation, the relays
and teardown (QEMU, the launcher, the bundle model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from cocoon.errors import ContainerStateError, RPCError
from cocoon.oci.state import ContainerState, StateStore, require, validate_id
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
