"""Telling the agent what the namespace holds: a plan as Kata's Interface, Routes and
ARPNeighbors messages (the generated network types stay in this module), sent with the agent
client's UpdateInterface, UpdateRoutes and AddARPNeighbors."""

from __future__ import annotations

import logging
import socket

from cocoon.errors import CocoonError, NetworkError
from cocoon.linux import rtnl
from cocoon.network.plan import Endpoint, NetworkPlan
from cocoon.protocols.gen import agent_pb2, kata_types_pb2
from cocoon.sandbox.agentclient import AgentClient

logger = logging.getLogger("cocoon.network.guest")

CALL_TIMEOUT = 30.0


def _family(family: int) -> kata_types_pb2.IPFamily:
    return kata_types_pb2.v6 if family == socket.AF_INET6 else kata_types_pb2.v4


def interface_proto(endpoint: Endpoint) -> kata_types_pb2.Interface:
    link = endpoint.link
    return kata_types_pb2.Interface(
        device=link.name, name=link.name, mtu=link.mtu, hwAddr=link.mac, type=link.kind,
        IPAddresses=[kata_types_pb2.IPAddress(family=_family(a.family), address=a.address,
                                              mask=str(a.prefixlen))
                     for a in endpoint.addresses])


def routes_proto(plan: NetworkPlan) -> agent_pb2.Routes:
    names = {e.link.index: e.link.name for e in plan.endpoints}
    return agent_pb2.Routes(Routes=[
        kata_types_pb2.Route(dest=f"{r.dst}/{r.dst_len}" if r.dst else "", gateway=r.gateway,
                             device=names[r.oif], source=r.prefsrc, scope=r.scope,
                             family=_family(r.family))
        for r in plan.routes])


def neighbors_proto(plan: NetworkPlan) -> agent_pb2.ARPNeighbors:
    names = {e.link.index: e.link.name for e in plan.endpoints}
    return agent_pb2.ARPNeighbors(ARPNeighbors=[
        kata_types_pb2.ARPNeighbor(
            toIPAddress=kata_types_pb2.IPAddress(family=_family(n.family), address=n.address),
            device=names[n.index], lladdr=n.mac, state=rtnl.NUD_PERMANENT)
        for n in plan.neighbors])


async def configure(agent: AgentClient, plan: NetworkPlan, timeout: float = CALL_TIMEOUT
                    ) -> None:
    """Interfaces first (routes name them and need their addresses), then routes, neighbours."""
    if plan.empty:
        return
    try:
        for endpoint in plan.endpoints:
            await agent.update_interface(interface_proto(endpoint), timeout=timeout)
        await agent.update_routes(routes_proto(plan), timeout=timeout)
        if plan.neighbors:
            await agent.add_arp_neighbors(neighbors_proto(plan), timeout=timeout)
    except CocoonError as err:
        raise NetworkError(f"configuring the guest's network failed: {err}") from err
    logger.info("guest network: %s", ", ".join(
        f"{e.link.name} {e.link.mac} " + " ".join(f"{a.address}/{a.prefixlen}"
                                                   for a in e.addresses)
        for e in plan.endpoints))
