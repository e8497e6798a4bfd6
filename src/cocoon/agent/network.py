"""Guest networking: interfaces, addresses, routes and neighbours configured by the host.

Until the networking work lands, these answer UNIMPLEMENTED so a host that asks gets a clear
status instead of a silent no-op.
"""

from __future__ import annotations

from typing import NoReturn

from cocoon.errors import RPCError
from cocoon.protocols.gen import agent_pb2, kata_types_pb2
from cocoon.ttrpc.status import StatusCode


def _unimplemented(what: str) -> NoReturn:
    raise RPCError(StatusCode.UNIMPLEMENTED, f"{what}: guest networking is not implemented yet")


async def update_interface(interface: kata_types_pb2.Interface) -> kata_types_pb2.Interface:
    _unimplemented("UpdateInterface")


async def update_routes(routes: agent_pb2.Routes) -> agent_pb2.Routes:
    _unimplemented("UpdateRoutes")


async def list_interfaces() -> agent_pb2.Interfaces:
    _unimplemented("ListInterfaces")


async def list_routes() -> agent_pb2.Routes:
    _unimplemented("ListRoutes")


async def add_arp_neighbors(neighbors: agent_pb2.ARPNeighbors) -> None:
    _unimplemented("AddARPNeighbors")
