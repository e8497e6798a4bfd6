"""The agent's networking handlers, run against the real kernel in a throwaway namespace where
veth devices play the guest's virtio-net devices (found by MAC, as in the guest)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from cocoon.agent import network
from cocoon.errors import RPCError
from cocoon.network.netns import run_in_netns
from cocoon.protocols.gen import agent_pb2, kata_types_pb2
from cocoon.ttrpc.status import StatusCode
from tests.framework.netns import ip

T = TypeVar("T")
MAC0 = "52:54:00:12:34:56"
MAC1 = "52:54:00:12:34:57"


class Guest:
    """A namespace with two unconfigured "NICs" named as a guest kernel would name them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        async def wrapped() -> T:
            return await call()
        return run_in_netns(self.path, lambda: asyncio.run(wrapped()))

    def ip(self, *args: str) -> str:
        return ip(*args, netns=self.name)


@pytest.fixture
def guest() -> Iterator[Guest]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"ccg-{os.getpid()}"
    ip("netns", "add", name)
    try:
        # veth pairs (this host's kernel has no dummy driver): eth0/eth1 play the NICs
        for index, mac in enumerate((MAC0, MAC1)):
            ip("link", "add", f"eth{index}", "address", mac, "type", "veth", "peer", "name",
               f"wire{index}", netns=name)
            ip("link", "set", f"wire{index}", "up", netns=name)
        yield Guest(name)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def interface(name: str, mac: str, *cidrs: str, mtu: int = 0) -> kata_types_pb2.Interface:
    return kata_types_pb2.Interface(
        name=name, hwAddr=mac, mtu=mtu,
        IPAddresses=[kata_types_pb2.IPAddress(address=c.split("/")[0], mask=c.split("/")[1])
                     for c in cidrs])


def test_update_interface_finds_the_device_by_mac_and_configures_it(guest: Guest) -> None:
    result = guest.run(lambda: network.update_interface(
        interface("net0", MAC1, "10.40.0.2/24", "fd40::2/64", mtu=1400)))
    assert (result.name, result.hwAddr, result.mtu) == ("net0", MAC1, 1400)
    assert {(a.address, a.mask) for a in result.IPAddresses} >= {("10.40.0.2", "24"),
                                                                  ("fd40::2", "64")}
    shown = guest.ip("addr", "show", "net0")
    assert "10.40.0.2/24" in shown and "fd40::2/64" in shown and "mtu 1400" in shown
    assert ",UP" in shown


def test_update_interface_is_declarative(guest: Guest) -> None:
    guest.run(lambda: network.update_interface(interface("eth0", MAC0, "10.41.0.2/24")))
    again = guest.run(lambda: network.update_interface(interface("eth0", MAC0, "10.41.0.3/24")))
    assert [a.address for a in again.IPAddresses if a.family == kata_types_pb2.v4] \
        == ["10.41.0.3"]


def test_names_may_be_swapped_between_devices(guest: Guest) -> None:
    guest.run(lambda: network.update_interface(interface("eth1", MAC0, "10.42.0.2/24")))
    guest.run(lambda: network.update_interface(interface("eth0", MAC1, "10.43.0.2/24")))
    listed = guest.run(network.list_interfaces)
    by_mac = {i.hwAddr: i.name for i in listed.Interfaces}
    assert by_mac[MAC0] == "eth1" and by_mac[MAC1] == "eth0"


def test_an_unknown_mac_is_not_found_and_named(guest: Guest) -> None:
    with pytest.raises(RPCError) as caught:
        guest.run(lambda: network.update_interface(interface("eth0", "02:aa:bb:cc:dd:ee"),
                                                   device_wait=0.2))
    assert caught.value.code == StatusCode.NOT_FOUND
    assert "02:aa:bb:cc:dd:ee" in caught.value.status_message
    assert MAC0 in caught.value.status_message  # what the guest has instead


def test_a_hot_plugged_device_is_waited_for(guest: Guest) -> None:
    late = "52:54:00:12:34:99"

    async def plug_then_update() -> kata_types_pb2.Interface:
        async def plug() -> None:
            await asyncio.sleep(0.3)  # the guest probing a device the host just added
            await asyncio.to_thread(guest.ip, "link", "add", "eth9", "address", late,
                                    "type", "veth", "peer", "name", "wire9")
        plugging = asyncio.create_task(plug())
        result = await network.update_interface(interface("net9", late, "10.44.0.2/24"))
        await plugging
        return result

    result = guest.run(plug_then_update)
    assert result.name == "net9" and result.hwAddr == late


@pytest.mark.parametrize(("bad", "expected"), [
    (kata_types_pb2.Interface(name="eth0"), "hwAddr is required"),
    (interface("a-name-much-too-long", MAC0), "not valid"),
    (interface("eth0", MAC0, "10.0.0.300/24"), "bad address"),
])
def test_bad_interfaces_are_invalid_arguments(guest: Guest, bad: kata_types_pb2.Interface,
                                              expected: str) -> None:
    with pytest.raises(RPCError, match=expected) as caught:
        guest.run(lambda: network.update_interface(bad))
    assert caught.value.code == StatusCode.INVALID_ARGUMENT


def routes(*items: tuple[str, str, str]) -> agent_pb2.Routes:
    return agent_pb2.Routes(Routes=[kata_types_pb2.Route(dest=d, gateway=g, device=dev)
                                    for d, g, dev in items])


def test_update_routes_sets_exactly_the_routes_asked_for(guest: Guest) -> None:
    guest.run(lambda: network.update_interface(interface("eth0", MAC0, "10.44.0.2/24")))
    guest.ip("route", "add", "10.99.0.0/16", "via", "10.44.0.254")  # stale: must go
    result = guest.run(lambda: network.update_routes(routes(
        ("", "10.44.0.1", "eth0"), ("10.45.0.0/16", "10.44.0.1", "eth0"),
        ("10.46.0.0/24", "", "eth0"))))
    shown = guest.ip("route", "show")
    assert "default via 10.44.0.1 dev eth0" in shown
    assert "10.45.0.0/16 via 10.44.0.1 dev eth0" in shown
    assert "10.46.0.0/24 dev eth0 scope link" in shown
    assert "10.99.0.0" not in shown
    assert "10.44.0.0/24 dev eth0 proto kernel" in shown  # the address's own route stays
    listed = {(r.dest, r.gateway, r.device) for r in result.Routes}
    assert ("", "10.44.0.1", "eth0") in listed and ("10.45.0.0/16", "10.44.0.1", "eth0") in listed
    assert guest.run(network.list_routes) == result


@pytest.mark.parametrize(("route", "code", "expected"), [
    (("", "10.44.0.1", "nosuch"), StatusCode.NOT_FOUND, "no guest device named nosuch"),
    (("10.50.0.0/16", "fd00::1", "eth0"), StatusCode.INVALID_ARGUMENT, "mixes IPv4 and IPv6"),
    (("10.50.0.0/33", "", "eth0"), StatusCode.INVALID_ARGUMENT, "10.50.0.0/33"),
    (("10.50.0.0/16", "10.77.0.1", "eth0"), StatusCode.INVALID_ARGUMENT, "unreachable"),
])
def test_bad_routes_are_refused_with_a_reason(guest: Guest, route: tuple[str, str, str],
                                              code: StatusCode, expected: str) -> None:
    guest.run(lambda: network.update_interface(interface("eth0", MAC0, "10.44.0.2/24")))
    with pytest.raises(RPCError, match=expected) as caught:
        guest.run(lambda: network.update_routes(routes(route)))
    assert caught.value.code == code


def test_arp_neighbours_are_permanent(guest: Guest) -> None:
    guest.run(lambda: network.update_interface(interface("eth0", MAC0, "10.47.0.2/24")))
    guest.run(lambda: network.add_arp_neighbors(agent_pb2.ARPNeighbors(ARPNeighbors=[
        kata_types_pb2.ARPNeighbor(toIPAddress=kata_types_pb2.IPAddress(address="10.47.0.9"),
                                   device="eth0", lladdr="02:00:00:00:00:09")])))
    assert "10.47.0.9 dev eth0 lladdr 02:00:00:00:00:09 PERMANENT" in guest.ip("neigh", "show")
    with pytest.raises(RPCError, match="no guest device named 'eth7'"):
        guest.run(lambda: network.add_arp_neighbors(agent_pb2.ARPNeighbors(ARPNeighbors=[
            kata_types_pb2.ARPNeighbor(toIPAddress=kata_types_pb2.IPAddress(address="10.0.0.1"),
                                       device="eth7", lladdr="02:00:00:00:00:09")])))
