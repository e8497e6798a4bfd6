"""Asking a running container's agent, through its sandbox monitor, and `kill`.

Only the sandbox client and the agent's messages: `cocoon kill`, which engines call to stop
every container, imports this module and not `operations`, which holds creation, the relays
and teardown (QEMU, the launcher, the bundle model).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from cocoon.errors import ContainerStateError, RPCError
from cocoon.oci.state import ContainerState, StateStore, require, validate_id
from cocoon.protocols.gen import agent_pb2
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout
from cocoon.ttrpc.status import StatusCode

CALL_TIMEOUT = 60.0


async def connect(state: ContainerState) -> SandboxClient:
    """A client of the container's sandbox (its monitor's socket)."""
    layout = Layout(Path(state.vm_dir))
    if not layout.monitor_socket.exists():
        raise ContainerStateError(f"container {state.id}: its VM is not running", id=state.id)
    return await SandboxClient.connect(layout.monitor_socket, timeout=10.0)


async def call_agent(state: ContainerState, method: str, request: Any,
                     response_type: Any = empty_pb2.Empty,
                     timeout: float = CALL_TIMEOUT) -> Any:
    """One call of the agent's service, on a connection of its own."""
    client = await connect(state)
    try:
        return await client.agent(method, request, response_type, timeout=timeout)
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
            asyncio.run(call_agent(state, "SignalProcess", agent_pb2.SignalProcessRequest(
                container_id=state.id, signal=sig, all=all_processes)))
        except RPCError as err:
            if err.code == StatusCode.NOT_FOUND:
                raise ContainerStateError(f"cannot kill container {state.id}: it is not "
                                          "running", id=state.id) from err
            raise
