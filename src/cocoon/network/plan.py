"""From what a namespace holds to what the VM gets: pure decisions, no I/O.

Kata's tc-filter model carries each veth the engine's CNI put in the container's namespace: the
guest gets a virtio-net device with the veth's MAC and MTU and the veth's addresses, routes and
permanent neighbours, and a tap beside the veth carries the frames (see cocoon.network.tc).
What cannot be carried that way is refused by name rather than silently left behind.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from cocoon.errors import NetworkError
from cocoon.linux import rtnl
from cocoon.network.inspect import Snapshot

logger = logging.getLogger("cocoon.network.plan")

TAP_SUFFIX = "_cocoon"
CARRIED_KINDS = ("veth",)


def tap_name(position: int) -> str:
    return f"tap{position}{TAP_SUFFIX}"


def is_cocoon_tap(name: str) -> bool:
    return name.startswith("tap") and name.endswith(TAP_SUFFIX)


@dataclass(frozen=True)
class Endpoint:
    """One engine interface carried into the guest through one tap."""

    link: rtnl.Link
    addresses: tuple[rtnl.Address, ...]
    tap: str


@dataclass(frozen=True)
class NetworkPlan:
    endpoints: tuple[Endpoint, ...] = ()
    routes: tuple[rtnl.Route, ...] = ()
    neighbors: tuple[rtnl.Neighbor, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.endpoints


def _is_link_local(family: int, address: str) -> bool:
    return family == socket.AF_INET6 and ipaddress.ip_address(address).is_link_local


def plan(snap: Snapshot, netns: str) -> NetworkPlan:
    """The endpoints, routes and neighbours to carry; NetworkError naming what cannot be."""
    addresses: dict[int, list[rtnl.Address]] = {}
    for address in snap.addresses:
        if address.address and not _is_link_local(address.family, address.address):
            addresses.setdefault(address.index, []).append(address)
    taken = [link.name for link in snap.links if is_cocoon_tap(link.name)]
    if taken:
        raise NetworkError(f"network namespace {netns} is already carried into a VM "
                           f"({', '.join(taken)} present)", netns=netns, taps=taken)
    carried: list[rtnl.Link] = []
    refused: list[str] = []
    for link in snap.links:
        if link.name == "lo":
            continue
        if not link.up and not addresses.get(link.index):
            # the kernel's fallback tunnels (sit0, tunl0, ...) and unused devices
            logger.debug("%s: %s (%s) is down without addresses: not carried", netns, link.name,
                         link.kind or "no kind")
            continue
        if link.kind not in CARRIED_KINDS:
            refused.append(f"{link.name} ({link.kind or 'unknown kind'}: only veth can be "
                           "carried)")
        elif not addresses.get(link.index):
            refused.append(f"{link.name} (veth without an IP address)")
        else:
            carried.append(link)
    if refused:
        raise NetworkError(f"network namespace {netns}: cannot carry "
                           f"{'; '.join(refused)} into the VM", netns=netns, refused=refused)
    endpoints = tuple(Endpoint(link, tuple(addresses[link.index]), tap_name(position))
                      for position, link in enumerate(carried))
    indexes = {link.index for link in carried}
    return NetworkPlan(endpoints=endpoints, routes=_routes(snap, indexes),
                       neighbors=tuple(n for n in snap.neighbors
                                       if n.index in indexes and n.mac
                                       and n.state & rtnl.NUD_PERMANENT))


def _routes(snap: Snapshot, indexes: set[int]) -> tuple[rtnl.Route, ...]:
    """The main table's routes through carried links, minus what the guest kernel makes itself
    (routes for its own addresses, IPv6 link-local) and what is not unicast."""
    routes = []
    for route in snap.routes:
        if route.table != rtnl.RT_TABLE_MAIN or route.oif not in indexes:
            continue
        if route.protocol == rtnl.RTPROT_KERNEL or route.type != rtnl.RTN_UNICAST:
            continue
        if route.dst and _is_link_local(route.family, route.dst):
            continue
        routes.append(route)
    return tuple(routes)
