"""Planning what of a namespace the VM gets: pure decisions over hand-written snapshots."""

from __future__ import annotations

import socket

import pytest

from cocoon.errors import NetworkError
from cocoon.linux import rtnl
from cocoon.network.inspect import Snapshot
from cocoon.network.plan import is_cocoon_tap, plan, tap_name

UP = rtnl.IFF_UP
LO = rtnl.Link(1, "lo", UP | 0x8, 65536, "00:00:00:00:00:00")
ETH0 = rtnl.Link(3, "eth0", UP, 1450, "8a:1b:2c:3d:4e:5f", "veth")
ETH1 = rtnl.Link(4, "eth1", UP, 1500, "8a:1b:2c:3d:4e:60", "veth")
SIT0 = rtnl.Link(2, "sit0", 0, 1480, "00:00:00:00", "sit")
V4 = socket.AF_INET
V6 = socket.AF_INET6


def addr(link: rtnl.Link, address: str, prefixlen: int, family: int = V4,
         scope: int = 0) -> rtnl.Address:
    return rtnl.Address(link.index, family, address, prefixlen, scope)


def snap(*links: rtnl.Link, addresses: tuple[rtnl.Address, ...] = (),
         routes: tuple[rtnl.Route, ...] = (),
         neighbors: tuple[rtnl.Neighbor, ...] = ()) -> Snapshot:
    return Snapshot(links=(LO, *links), addresses=(addr(LO, "127.0.0.1", 8), *addresses),
                    routes=routes, neighbors=neighbors)


def test_loopback_only_plans_nothing() -> None:
    assert plan(snap(), "/run/netns/x").empty
    assert plan(snap(SIT0), "/run/netns/x").empty  # the kernel's fallback tunnel is no network


def test_each_veth_gets_a_tap_and_keeps_its_global_addresses() -> None:
    result = plan(snap(ETH0, ETH1, addresses=(
        addr(ETH0, "10.88.0.5", 16), addr(ETH0, "fe80::1", 64, V6, rtnl.RT_SCOPE_LINK),
        addr(ETH0, "fd88::5", 64, V6), addr(ETH1, "10.89.0.5", 24))), "/run/netns/x")
    assert [(e.link.name, e.tap) for e in result.endpoints] == [("eth0", "tap0_cocoon"),
                                                                ("eth1", "tap1_cocoon")]
    assert [a.address for a in result.endpoints[0].addresses] == ["10.88.0.5", "fd88::5"]


def test_routes_keep_what_the_guest_kernel_does_not_make_itself() -> None:
    default = rtnl.Route(V4, gateway="10.88.0.1", oif=ETH0.index)
    extra = rtnl.Route(V4, dst="10.90.0.0", dst_len=16, gateway="10.88.0.1", oif=ETH0.index)
    v6 = rtnl.Route(V6, dst="fd99::", dst_len=64, gateway="fd88::1", oif=ETH0.index)
    dropped = [
        rtnl.Route(V4, dst="10.88.0.0", dst_len=16, oif=ETH0.index, scope=rtnl.RT_SCOPE_LINK,
                   protocol=rtnl.RTPROT_KERNEL),                       # the address's own
        rtnl.Route(V6, dst="fe80::", dst_len=64, oif=ETH0.index),      # link-local
        rtnl.Route(V4, dst="10.91.0.0", dst_len=16, oif=LO.index),     # not through a veth
        rtnl.Route(V4, dst="10.92.0.0", dst_len=16, oif=ETH0.index, table=100),
        rtnl.Route(V4, dst="10.93.0.0", dst_len=16, oif=ETH0.index, type=6),  # prohibit
    ]
    result = plan(snap(ETH0, addresses=(addr(ETH0, "10.88.0.5", 16),),
                       routes=(default, extra, v6, *dropped)), "/run/netns/x")
    assert result.routes == (default, extra, v6)


def test_only_permanent_neighbours_of_carried_links_are_kept() -> None:
    permanent = rtnl.Neighbor(ETH0.index, V4, "10.88.0.9", "02:00:00:00:00:09",
                              rtnl.NUD_PERMANENT)
    learned = rtnl.Neighbor(ETH0.index, V4, "10.88.0.10", "02:00:00:00:00:10", 0x02)
    result = plan(snap(ETH0, addresses=(addr(ETH0, "10.88.0.5", 16),),
                       neighbors=(permanent, learned)), "/run/netns/x")
    assert result.neighbors == (permanent,)


@pytest.mark.parametrize(("links", "addresses", "named"), [
    ((rtnl.Link(5, "mv0", UP, 1500, "02:00:00:00:00:01", "macvlan"),), (("mv0", 5),),
     "mv0 (macvlan: only veth can be carried)"),
    ((rtnl.Link(6, "dummy0", 0, 1500, "02:00:00:00:00:02", "dummy"),), (("dummy0", 6),),
     "dummy0 (dummy: only veth can be carried)"),
    ((ETH0,), (), "eth0 (veth without an IP address)"),
])
def test_what_cannot_be_carried_is_refused_by_name(
        links: tuple[rtnl.Link, ...], addresses: tuple[tuple[str, int], ...],
        named: str) -> None:
    addrs = tuple(rtnl.Address(index, V4, "10.1.0.2", 24, 0) for _, index in addresses)
    with pytest.raises(NetworkError) as caught:
        plan(snap(*links, addresses=addrs), "/run/netns/cni-1")
    assert named in str(caught.value)
    assert "/run/netns/cni-1" in str(caught.value)


def test_a_namespace_already_carried_is_refused() -> None:
    tap = rtnl.Link(9, "tap0_cocoon", UP, 1500, "02:00:00:00:00:03", "tun")
    with pytest.raises(NetworkError, match="already carried into a VM"):
        plan(snap(ETH0, tap, addresses=(addr(ETH0, "10.88.0.5", 16),)), "/run/netns/x")


def test_tap_names_fit_ifnamsiz_and_are_recognised() -> None:
    assert all(len(tap_name(i)) <= 15 for i in range(100))
    assert is_cocoon_tap(tap_name(3)) and not is_cocoon_tap("tap0") \
        and not is_cocoon_tap("eth0_cocoon")
