"""A host-side client of one sandbox: its monitor's socket, where the agent's services (through the
proxy) and the monitor's own (`cocoon.Monitor`) are served on one connection.

The agent's calls are `client.agent` (a typed `AgentClient` on this connection); the monitor's
are the methods here: status, claim (a pooled clone made a sandbox) and shutdown. Every call has a
bound; errors arrive as `RPCError` (a status from the agent or the monitor) or
`ConnectionLostError` (the monitor went away).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from cocoon.protocols.gen import monitor_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.ttrpc.client import Client

MONITOR = "cocoon.Monitor"


class SandboxClient:
    def __init__(self, client: Client) -> None:
        self.ttrpc = client
        self.agent = AgentClient(client)

    @classmethod
    async def connect(cls, socket: Path, timeout: float = 5.0) -> SandboxClient:
        return cls(await Client.connect_unix(socket, timeout=timeout))

    @classmethod
    def over(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
             peer: str) -> SandboxClient:
        return cls(Client(reader, writer, peer=peer))

    async def close(self) -> None:
        await self.ttrpc.close()

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def claim(self, config_json: str, timeout: float | None = 60.0) -> dict[str, Any]:
        response = await self.ttrpc.call(MONITOR, "Claim",
                                         monitor_pb2.ClaimRequest(config_json=config_json),
                                         monitor_pb2.ClaimResponse, timeout=timeout)
        info: dict[str, Any] = json.loads(response.ready_json)
        return info

    async def attach_network(self, netns: str, timeout: float | None = 60.0) -> int:
        response = await self.ttrpc.call(MONITOR, "AttachNetwork",
                                         monitor_pb2.AttachNetworkRequest(netns=netns),
                                         monitor_pb2.AttachNetworkResponse, timeout=timeout)
        return response.interfaces

    async def status(self, timeout: float | None = 5.0) -> monitor_pb2.StatusResponse:
        return await self.ttrpc.call(MONITOR, "Status", monitor_pb2.StatusRequest(),
                                     monitor_pb2.StatusResponse, timeout=timeout)

    async def shutdown(self, grace: float = 0.0,
                       timeout: float | None = 30.0) -> monitor_pb2.ShutdownResponse:
        return await self.ttrpc.call(MONITOR, "Shutdown",
                                     monitor_pb2.ShutdownRequest(grace_seconds=grace),
                                     monitor_pb2.ShutdownResponse, timeout=timeout)
