"""The guest's rtnetlink codec: messages built and parsed as bytes, then checked against the real
kernel in a throwaway namespace and against pyroute2's reading of the same namespace."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from cocoon.linux import rtnl
from cocoon.network import inspect
from cocoon.network.netns import run_in_netns
from tests.framework.netns import FakeCni, fake_cni, ip

NUD_NOARP = 0x40
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


# --- bytes only ------------------------------------------------------------------------------


def test_attr_is_padded_to_four_bytes() -> None:
    data = rtnl.attr(rtnl.IFLA_IFNAME, b"eth0\0")
    assert len(data) == 12 and data[:4] == struct.pack("=HH", 9, rtnl.IFLA_IFNAME)
    assert rtnl.attrs_of(data) == {rtnl.IFLA_IFNAME: b"eth0\0"}


def test_parse_splits_a_datagram_and_refuses_a_truncated_message() -> None:
    one = rtnl.encode(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, 7, b"\0" * 16, rtnl.attr(3, b"a\0"))
    two = rtnl.encode(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, 7, b"\0\0\0\0")
    messages = list(rtnl.parse(one + two))
    assert [(m.type, m.seq) for m in messages] == [(rtnl.RTM_NEWLINK, 7), (rtnl.NLMSG_DONE, 7)]
    with pytest.raises(ValueError, match="truncated"):
        list(rtnl.parse(one[:-4]))


def test_error_of_reads_the_negative_errno() -> None:
    message = rtnl.Message(rtnl.NLMSG_ERROR, 0, 1, struct.pack("=i", -errno.EEXIST) + b"\0" * 16)
    assert rtnl.error_of(message) == errno.EEXIST


@pytest.mark.parametrize("route", [
    rtnl.Route(family=socket.AF_INET, gateway="10.0.0.1", oif=3),
    rtnl.Route(family=socket.AF_INET, dst="10.5.0.0", dst_len=16, gateway="10.0.0.1", oif=3,
               priority=100),
    rtnl.Route(family=socket.AF_INET, dst="10.0.0.0", dst_len=24, oif=2, prefsrc="10.0.0.2",
               scope=rtnl.RT_SCOPE_LINK),
    rtnl.Route(family=socket.AF_INET6, dst="fd00::", dst_len=64, gateway="fd00::1", oif=2),
])
def test_a_route_request_parses_back_to_the_same_route(route: rtnl.Route) -> None:
    (message,) = rtnl.parse(rtnl.route_request(5, route))
    assert message.type == rtnl.RTM_NEWROUTE
    assert message.flags & rtnl.NLM_F_CREATE and message.flags & rtnl.NLM_F_REPLACE
    assert rtnl.route_from(message.body) == route


def test_set_link_request_changes_only_what_is_asked() -> None:
    (message,) = rtnl.parse(rtnl.set_link_request(1, 4, mtu=1400))
    link = rtnl.link_from(message.body)
    assert (link.index, link.mtu, link.name, link.flags) == (4, 1400, "", 0)
    (up,) = rtnl.parse(rtnl.set_link_request(2, 4, name="eth0", up=True))
    assert struct.unpack_from("=BxHiII", up.body)[3:] == (rtnl.IFF_UP, rtnl.IFF_UP)
    assert rtnl.link_from(up.body).name == "eth0"


def test_address_and_neighbour_requests_round_trip() -> None:
    (add,) = rtnl.parse(rtnl.address_request(1, 2, "fd00::5", 64))
    assert rtnl.address_from(add.body) == rtnl.Address(2, socket.AF_INET6, "fd00::5", 64, 0)
    assert rtnl.attrs_of(add.body[8:])[rtnl.IFA_FLAGS] == struct.pack("=I", rtnl.IFA_F_NODAD)
    (neigh,) = rtnl.parse(rtnl.neighbor_request(1, 2, "10.0.0.9", "02:00:00:00:00:09"))
    assert rtnl.neighbor_from(neigh.body) == rtnl.Neighbor(
        2, socket.AF_INET, "10.0.0.9", "02:00:00:00:00:09", rtnl.NUD_PERMANENT)


@pytest.mark.parametrize("bad", ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "zz:00:00:00:00:00",
                                 "020:00:00:00:00:00"])
def test_mac_bytes_refuses_what_is_not_a_mac(bad: str) -> None:
    with pytest.raises(ValueError):
        rtnl.mac_bytes(bad)


# --- the real kernel -------------------------------------------------------------------------


@pytest.fixture
def cni() -> Iterator[FakeCni]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with fake_cni("ccr") as made:
        made.add_veth("eth0", "10.231.0.2/24", "10.231.0.1/24", mtu=1400)
        ip("addr", "add", "fd31::2/64", "dev", "eth0", "nodad", netns=made.name)
        ip("route", "add", "10.232.0.0/16", "via", "10.231.0.1", netns=made.name)
        ip("route", "add", "default", "via", "10.231.0.1", netns=made.name)
        ip("neigh", "add", "10.231.0.9", "lladdr", "02:00:00:00:00:09", "dev", "eth0", "nud",
           "permanent", netns=made.name)
        yield made


@needs_root
def test_rtnl_reads_what_pyroute2_reads(cni: FakeCni) -> None:
    def both() -> tuple[inspect.Snapshot, inspect.Snapshot]:
        with rtnl.Rtnl() as nl:
            mine = inspect.Snapshot(tuple(nl.links()), tuple(nl.addresses()),
                                    tuple(r for r in nl.routes()
                                          if r.table == rtnl.RT_TABLE_MAIN),
                                    tuple(nl.neighbors()))
        with IPRoute() as ipr:
            return mine, inspect.read(ipr)

    def settled(snap: inspect.Snapshot) -> inspect.Snapshot:
        # the kernel adds IPv6 multicast (NOARP) neighbours on its own while the link comes up
        return dataclasses.replace(snap, neighbors=tuple(
            n for n in snap.neighbors if n.state != NUD_NOARP))

    mine, theirs = run_in_netns(cni.path, both)
    assert settled(mine) == settled(theirs)
    eth0 = next(link for link in mine.links if link.name == "eth0")
    assert (eth0.kind, eth0.mtu, eth0.up) == ("veth", 1400, True)
    assert rtnl.Route(family=socket.AF_INET, dst="10.232.0.0", dst_len=16, gateway="10.231.0.1",
                      oif=eth0.index) in mine.routes


@needs_root
def test_kernel_refusals_carry_the_errno_and_the_request(cni: FakeCni) -> None:
    def set_missing() -> None:
        with rtnl.Rtnl() as nl:
            nl.set_link(999, mtu=1300)

    with pytest.raises(OSError) as caught:
        run_in_netns(cni.path, set_missing)
    assert caught.value.errno == errno.ENODEV
    assert "set link 999" in str(caught.value)


@needs_root
def test_delete_route_of_a_missing_route_is_quiet(cni: FakeCni) -> None:
    def delete() -> list[rtnl.Route]:
        with rtnl.Rtnl() as nl:
            nl.delete_route(rtnl.Route(family=socket.AF_INET, dst="10.99.0.0", dst_len=24))
            nl.delete_route(rtnl.Route(family=socket.AF_INET, dst="10.232.0.0", dst_len=16,
                                       gateway="10.231.0.1"))
            return nl.routes()

    assert not any(r.dst == "10.232.0.0" for r in run_in_netns(cni.path, delete))
