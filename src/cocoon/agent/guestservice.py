"""`cocoon.GuestAgent`: Cocoon's own calls to the agent, beside Kata's AgentService."""

from __future__ import annotations

from cocoon.agent import trim, warmup
from cocoon.agent.service import AgentService
from cocoon.protocols.gen import guest_pb2
from cocoon.ttrpc.server import CallContext


class GuestAgentService:
    def __init__(self, agent: AgentService) -> None:
        self.agent = agent

    async def TrimMemory(self, request: guest_pb2.TrimMemoryRequest,
                         ctx: CallContext) -> guest_pb2.TrimMemoryResponse:
        return trim.trim(request.keep_free_bytes or trim.DEFAULT_KEEP_FREE)

    async def WarmUp(self, request: guest_pb2.WarmUpRequest,
                     ctx: CallContext) -> guest_pb2.WarmUpResponse:
        return guest_pb2.WarmUpResponse(
            seconds=await warmup.warm_up(self.agent, request.rootfs))
