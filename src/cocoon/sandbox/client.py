"""A host-side client of one sandbox: the agent's services (through the proxy) and the monitor's.

Every call has a bound; errors arrive as `RPCError` (a status from the agent or the monitor) or
`ConnectionLostError` (the monitor went away).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2, monitor_pb2
from cocoon.ttrpc.client import Client

M = TypeVar("M", bound=Message)

AGENT = "grpc.AgentService"
HEALTH = "grpc.Health"
MONITOR = "cocoon.Monitor"
GUEST = "cocoon.GuestAgent"
DEFAULT_TIMEOUT = 30.0


class SandboxClient:
    def __init__(self, client: Client) -> None:
        self.ttrpc = client

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

    async def agent(self, method: str, request: Message, response_type: type[M],
                    timeout: float | None = DEFAULT_TIMEOUT) -> M:
        return await self.ttrpc.call(AGENT, method, request, response_type, timeout=timeout)

    async def health(self, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        response = await self.ttrpc.call(HEALTH, "Check", health_pb2.CheckRequest(),
                                         health_pb2.HealthCheckResponse, timeout=timeout)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def guest_details(self, timeout: float | None = DEFAULT_TIMEOUT
                            ) -> agent_pb2.GuestDetailsResponse:
        return await self.agent("GetGuestDetails", agent_pb2.GuestDetailsRequest(),
                                agent_pb2.GuestDetailsResponse, timeout)

    async def trim_memory(self, keep_free: int, timeout: float | None = DEFAULT_TIMEOUT
                          ) -> guest_pb2.TrimMemoryResponse:
        return await self.ttrpc.call(GUEST, "TrimMemory",
                                     guest_pb2.TrimMemoryRequest(keep_free_bytes=keep_free),
                                     guest_pb2.TrimMemoryResponse, timeout=timeout)

    async def warm_up(self, rootfs: str = "", timeout: float | None = DEFAULT_TIMEOUT) -> float:
        response = await self.ttrpc.call(GUEST, "WarmUp", guest_pb2.WarmUpRequest(rootfs=rootfs),
                                         guest_pb2.WarmUpResponse, timeout=timeout)
        return response.seconds

    async def claim(self, config_json: str, timeout: float | None = 60.0) -> dict[str, Any]:
        response = await self.ttrpc.call(MONITOR, "Claim",
                                         monitor_pb2.ClaimRequest(config_json=config_json),
                                         monitor_pb2.ClaimResponse, timeout=timeout)
        info: dict[str, Any] = json.loads(response.ready_json)
        return info

    async def status(self, timeout: float | None = 5.0) -> monitor_pb2.StatusResponse:
        return await self.ttrpc.call(MONITOR, "Status", monitor_pb2.StatusRequest(),
                                     monitor_pb2.StatusResponse, timeout=timeout)

    async def shutdown(self, grace: float = 0.0,
                       timeout: float | None = 30.0) -> monitor_pb2.ShutdownResponse:
        return await self.ttrpc.call(MONITOR, "Shutdown",
                                     monitor_pb2.ShutdownRequest(grace_seconds=grace),
                                     monitor_pb2.ShutdownResponse, timeout=timeout)
