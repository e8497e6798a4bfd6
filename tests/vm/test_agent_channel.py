"""The agent's channel with no monitor in between: host clients come and go, the agent stays.

QEMU runs the real guest image with the agent's virtio-serial port on a unix socket, and the
test talks ttrpc straight to that socket. While no host client is connected the guest's reads
return EOF; the agent must take that as "wait for the next host", never as a reason to exit.
Each new client starts its stream ids at 1 again, so the agent must also begin a new session
(new stream state) for every host connection.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from cocoon.errors import ConnectionLostError, RPCError
from cocoon.guest import assets
from cocoon.hypervisor import accel
from cocoon.hypervisor.config import VMConfig
from cocoon.hypervisor.qemu import QemuVM
from cocoon.protocols.gen import agent_pb2, health_pb2
from cocoon.ttrpc.client import Client
from cocoon.ttrpc.status import StatusCode

pytestmark = pytest.mark.vm

BOOT_BOUND = 120.0  # TCG boots the agent in about 6 s; other suites may share the two cores
CALL_BOUND = 20.0
RECONNECTS = 6


async def connect(socket: Path) -> Client:
    return await Client.connect_unix(socket, timeout=10.0)


async def health(client: Client, timeout: float = CALL_BOUND) -> bool:
    response = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                 health_pb2.HealthCheckResponse, timeout=timeout)
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def details(client: Client) -> agent_pb2.GuestDetailsResponse:
    return await client.call("grpc.AgentService", "GetGuestDetails",
                             agent_pb2.GuestDetailsRequest(), agent_pb2.GuestDetailsResponse,
                             timeout=CALL_BOUND)


async def first_answer(socket: Path) -> Client:
    """Connect and call Health until the agent is up; the client that got the answer."""
    deadline = time.monotonic() + BOOT_BOUND
    while True:
        client = await connect(socket)
        try:
            # the request waits in QEMU until the agent opens its port
            if await health(client, timeout=max(1.0, min(10.0, deadline - time.monotonic()))):
                return client
        except RPCError as err:
            if err.code != StatusCode.DEADLINE_EXCEEDED or time.monotonic() > deadline:
                raise
        await client.close()


def vm_config(tmp: Path, decision: accel.AccelDecision) -> VMConfig:
    image = assets.find_guest_image() or assets.ensure_guest_image()
    return VMConfig(name="agent-channel", kernel=image.kernel.vmlinuz, initrd=image.initrd,
                    accel=decision.accel, cpu_model=decision.cpu_model,
                    qmp_socket=tmp / "qmp.sock", agent_socket=tmp / "agent.sock",
                    console_log=tmp / "console.log")


def test_the_agent_serves_again_after_the_host_reconnects(vm_root: Path) -> None:
    workdir = vm_root / "agent-channel"
    workdir.mkdir()

    async def scenario() -> None:
        decision = await accel.choose_accel_async()
        config = vm_config(workdir, decision)
        assert config.agent_socket is not None
        socket = config.agent_socket
        async with QemuVM(config) as vm:
            client = await first_answer(socket)
            first = await details(client)
            await client.close()
            for attempt in range(RECONNECTS):
                if attempt % 2:
                    # the agent sees the hang-up; straight back, it may not (a new session
                    # begins where the new client's stream ids start again)
                    await asyncio.sleep(0.3)
                client = await connect(socket)
                try:
                    assert await health(client)
                    again = await details(client)
                finally:
                    await client.close()
                # the same agent, not a restarted one
                assert (again.boot_id, again.agent_ready_ns) == \
                    (first.boot_id, first.agent_ready_ns)
            # a host that leaves with a call in flight
            client = await connect(socket)
            pending = asyncio.ensure_future(client.call(
                "grpc.AgentService", "GetOOMEvent", agent_pb2.GetOOMEventRequest(),
                agent_pb2.OOMEvent, timeout=CALL_BOUND))
            await asyncio.sleep(0.3)
            await client.close()
            with pytest.raises(ConnectionLostError):
                await pending
            client = await connect(socket)
            try:
                assert await health(client)
                assert (await details(client)).boot_id == first.boot_id
                # DestroySandbox powers the guest off cleanly: QEMU exits by itself, status 0
                await client.call("grpc.AgentService", "DestroySandbox",
                                  agent_pb2.DestroySandboxRequest(),
                                  empty_pb2.Empty, timeout=CALL_BOUND)
            finally:
                await client.close()
            assert await vm.wait(CALL_BOUND) == 0
        console = config.console_log.read_text(errors="replace")
        assert "Traceback" not in console, console[-3000:]
        sessions = [int(n) for n in re.findall(r"host reconnected \(session (\d+)\)", console)]
        # one session per host connection: the first, RECONNECTS more, the one left with a
        # call in flight and the last (more if the agent came up while we were retrying)
        assert sessions and max(sessions) >= RECONNECTS + 3, console[-3000:]

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(workdir)
