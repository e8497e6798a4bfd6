"""A plan as the agent's requests: Kata's messages, in the order the guest can apply them."""

from __future__ import annotations

import asyncio
import socket

import pytest
from google.protobuf.message import Message

from cocoon.errors import NetworkError, RPCError
from cocoon.linux import rtnl
from cocoon.network import guest
from cocoon.network.plan import Endpoint, NetworkPlan
from cocoon.protocols.gen import agent_pb2, kata_types_pb2
from cocoon.ttrpc.status import StatusCode
from tests.framework.fakeagent import FakeAgent, connected

ETH0 = rtnl.Link(3, "eth0", 1, 1450, "8a:1b:2c:3d:4e:5f", "veth")
ETH1 = rtnl.Link(4, "net1", 1, 1500, "8a:1b:2c:3d:4e:60", "veth")
PLAN = NetworkPlan(
    endpoints=(Endpoint(ETH0, (rtnl.Address(3, socket.AF_INET, "10.88.0.5", 16, 0),
                               rtnl.Address(3, socket.AF_INET6, "fd88::5", 64, 0)), "tap0_cocoon"),
               Endpoint(ETH1, (rtnl.Address(4, socket.AF_INET, "10.89.0.5", 24, 0),),
                        "tap1_cocoon")),
    routes=(rtnl.Route(socket.AF_INET, gateway="10.88.0.1", oif=3),
            rtnl.Route(socket.AF_INET, dst="10.90.0.0", dst_len=16, gateway="10.89.0.1", oif=4),
            rtnl.Route(socket.AF_INET6, dst="fd99::", dst_len=64, gateway="fd88::1", oif=3)),
    neighbors=(rtnl.Neighbor(3, socket.AF_INET, "10.88.0.9", "02:00:00:00:00:09",
                             rtnl.NUD_PERMANENT),))


def configure(agent: FakeAgent, plan: NetworkPlan) -> list[tuple[str, Message]]:
    """Configure `plan` through a client of `agent`; the calls the agent received."""
    async def scenario() -> None:
        async with connected(agent) as (client, _):
            await guest.configure(client, plan)

    asyncio.run(scenario())
    return [(method, request) for _, method, request in agent.calls]


def test_interfaces_carry_name_mac_mtu_and_addresses() -> None:
    proto = guest.interface_proto(PLAN.endpoints[0])
    assert (proto.name, proto.hwAddr, proto.mtu, proto.type) == ("eth0", ETH0.mac, 1450, "veth")
    assert [(a.family, a.address, a.mask) for a in proto.IPAddresses] == [
        (kata_types_pb2.v4, "10.88.0.5", "16"), (kata_types_pb2.v6, "fd88::5", "64")]


def test_routes_name_their_device_and_use_kata_destinations() -> None:
    routes = guest.routes_proto(PLAN).Routes
    assert [(r.dest, r.gateway, r.device, r.family) for r in routes] == [
        ("", "10.88.0.1", "eth0", kata_types_pb2.v4),
        ("10.90.0.0/16", "10.89.0.1", "net1", kata_types_pb2.v4),
        ("fd99::/64", "fd88::1", "eth0", kata_types_pb2.v6)]


def test_configure_sends_interfaces_then_routes_then_neighbours() -> None:
    calls = configure(FakeAgent(), PLAN)
    assert [method for method, _ in calls] == [
        "UpdateInterface", "UpdateInterface", "UpdateRoutes", "AddARPNeighbors"]
    assert calls[0][1] == agent_pb2.UpdateInterfaceRequest(
        interface=guest.interface_proto(PLAN.endpoints[0]))
    assert calls[2][1] == agent_pb2.UpdateRoutesRequest(routes=guest.routes_proto(PLAN))
    request = calls[-1][1]
    assert isinstance(request, agent_pb2.AddARPNeighborsRequest)
    neighbors = request.neighbors.ARPNeighbors
    assert [(n.toIPAddress.address, n.device, n.lladdr, n.state) for n in neighbors] == [
        ("10.88.0.9", "eth0", "02:00:00:00:00:09", rtnl.NUD_PERMANENT)]


def test_an_empty_plan_sends_nothing_and_a_refusal_is_a_network_error() -> None:
    assert configure(FakeAgent(), NetworkPlan()) == []
    failing = FakeAgent(errors={"UpdateInterface": RPCError(
        StatusCode.NOT_FOUND, "no guest network device has MAC x")})
    with pytest.raises(NetworkError, match=r"configuring the guest.s network failed: .*MAC x"):
        configure(failing, PLAN)
    assert len(failing.calls) == 1
