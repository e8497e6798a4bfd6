"""`FakeAgent`: the guest agent's three ttrpc services served in-process, for unit tests of what
talks to the agent (`AgentClient`, the stdio relay) without a VM.

    agent = FakeAgent(replies={"WaitProcess": agent_pb2.WaitProcessResponse(status=3)})
    async with connected(agent) as (client, agent_end):
        assert await client.wait_process("c1") == 3
    assert agent.calls == [("grpc.AgentService", "WaitProcess", ...)]

Every method of grpc.AgentService, grpc.Health and cocoon.GuestAgent is served: the request is
recorded, then the method's handler (if one is set) answers, else its error is raised, else its
reply (an empty message by default) is sent after its delay.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.ttrpc.server import CallContext, Server

SERVICES = (agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
            health_pb2.DESCRIPTOR.services_by_name["Health"],
            guest_pb2.DESCRIPTOR.services_by_name["GuestAgent"])

Handler = Callable[[Message], Awaitable[Message]]


@dataclass
class FakeAgent:
    calls: list[tuple[str, str, Message]] = field(default_factory=list)
    replies: dict[str, Message] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)

    def service(self, descriptor: ServiceDescriptor) -> object:
        implementation = type("Service", (), {})()
        for method in descriptor.methods:
            setattr(implementation, method.name,
                    self._handler(descriptor.full_name, method.name,
                                  GetMessageClass(method.output_type)))
        return implementation

    def methods(self) -> list[str]:
        return [method for _, method, _ in self.calls]

    def _handler(self, service: str, method: str, reply: type[Message]
                 ) -> Callable[[Message, CallContext], Awaitable[Message]]:
        async def handle(request: Message, ctx: CallContext) -> Message:
            self.calls.append((service, method, request))
            if method in self.handlers:
                return await self.handlers[method](request)
            await asyncio.sleep(self.delays.get(method, 0))
            if method in self.errors:
                raise self.errors[method]
            return self.replies.get(method, reply())
        return handle


@asynccontextmanager
async def connected(agent: FakeAgent) -> AsyncIterator[tuple[AgentClient, asyncio.StreamWriter]]:
    """A client of `agent` over a socket pair, and the agent's end (to cut the connection)."""
    server = Server()
    for descriptor in SERVICES:
        server.register_service(descriptor, agent.service(descriptor))
    host, guest = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=guest)
    serving = asyncio.create_task(server.serve_connection(reader, writer, peer="host"))
    client_reader, client_writer = await asyncio.open_unix_connection(sock=host)
    client = AgentClient.over(client_reader, client_writer, peer="the test agent")
    try:
        yield client, writer
    finally:
        await client.close()
        await server.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
