"""What the engine put in a network namespace: links, addresses, routes and neighbours.

Read with pyroute2 and returned as the plain values of `cocoon.linux.rtnl` (the model the guest
side uses too), so that planning works on values that tests can write down by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from cocoon.linux import rtnl
from cocoon.network.netns import run_in_netns


@dataclass(frozen=True)
class Snapshot:
    """One namespace's network state at one moment."""

    links: tuple[rtnl.Link, ...] = ()
    addresses: tuple[rtnl.Address, ...] = ()
    routes: tuple[rtnl.Route, ...] = ()
    neighbors: tuple[rtnl.Neighbor, ...] = ()


def _link(msg: Any) -> rtnl.Link:
    return rtnl.Link(index=msg["index"], name=msg.get("ifname") or "", flags=msg["flags"],
                     mtu=msg.get("mtu") or 0, mac=msg.get("address") or "",
                     kind=msg.get(("linkinfo", "kind")) or "")


def _address(msg: Any) -> rtnl.Address:
    return rtnl.Address(index=msg["index"], family=msg["family"],
                        address=msg.get("local") or msg.get("address") or "",
                        prefixlen=msg["prefixlen"], scope=msg["scope"])


def _route(msg: Any) -> rtnl.Route:
    return rtnl.Route(family=msg["family"], dst=msg.get("dst") or "", dst_len=msg["dst_len"],
                      gateway=msg.get("gateway") or "", oif=msg.get("oif") or 0,
                      prefsrc=msg.get("prefsrc") or "", scope=msg["scope"],
                      protocol=msg["proto"], table=msg.get("table") or msg["table"],
                      type=msg["type"], priority=msg.get("priority") or 0)


def _neighbor(msg: Any) -> rtnl.Neighbor:
    return rtnl.Neighbor(index=msg["ifindex"], family=msg["family"], address=msg.get("dst") or "",
                         mac=msg.get("lladdr") or "", state=msg["state"])


def read(ipr: IPRoute) -> Snapshot:
    """The state of the namespace `ipr`'s socket lives in."""
    return Snapshot(links=tuple(_link(m) for m in ipr.get_links()),
                    addresses=tuple(_address(m) for m in ipr.get_addr()),
                    routes=tuple(_route(m) for m in ipr.get_routes(table=rtnl.RT_TABLE_MAIN)),
                    neighbors=tuple(_neighbor(m) for m in ipr.get_neighbours()))


def snapshot(netns: str) -> Snapshot:
    """The state of the namespace at path `netns`."""
    def work() -> Snapshot:
        with IPRoute() as ipr:
            return read(ipr)
    return run_in_netns(netns, work)
