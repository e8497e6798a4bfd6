"""Guest networking: the interfaces, addresses, routes and neighbours the host found in the
container's network namespace, applied to the guest's virtio-net devices.

The host hands each device the MAC of the engine's veth, so a device is found by its MAC, never
by the name the guest kernel gave it; it is then renamed to the veth's name, so the container
sees the interface names its engine chose. Every call is declarative (asking twice gives the same
guest state) and answers with what the guest now has, read back from the kernel.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

from cocoon.errors import RPCError
from cocoon.linux import rtnl
from cocoon.protocols.gen import agent_pb2, kata_types_pb2
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.agent.network")

MAX_IFNAME = 15
DEVICE_WAIT = 5.0   # seconds a hot-plugged NIC gets to appear
DEVICE_POLL = 0.01
_FAMILY_PROTO: dict[int, kata_types_pb2.IPFamily] = {
    int(socket.AF_INET): kata_types_pb2.v4, int(socket.AF_INET6): kata_types_pb2.v6}
_KERNEL_CODES = {errno.EINVAL: StatusCode.INVALID_ARGUMENT, errno.ENODEV: StatusCode.NOT_FOUND,
                 errno.ENETUNREACH: StatusCode.INVALID_ARGUMENT,
                 errno.EEXIST: StatusCode.ALREADY_EXISTS}


def _fail(code: StatusCode, message: str) -> RPCError:
    return RPCError(code, message)


def _kernel_error(err: OSError) -> RPCError:
    code = _KERNEL_CODES.get(err.errno or 0, StatusCode.INTERNAL)
    return RPCError(code, str(err.strerror if err.strerror else err))


# --- interfaces ----------------------------------------------------------------------------------


def _interface_proto(link: rtnl.Link, addresses: list[rtnl.Address]) -> kata_types_pb2.Interface:
    return kata_types_pb2.Interface(
        device=link.name, name=link.name, mtu=link.mtu, hwAddr=link.mac, type=link.kind,
        raw_flags=link.flags,
        IPAddresses=[kata_types_pb2.IPAddress(family=_FAMILY_PROTO.get(a.family, kata_types_pb2.v4),
                                              address=a.address, mask=str(a.prefixlen))
                     for a in addresses if a.index == link.index])


def _requested_addresses(interface: kata_types_pb2.Interface) -> list[tuple[str, int]]:
    wanted = []
    for ip in interface.IPAddresses:
        text = f"{ip.address}/{ip.mask}" if ip.mask else ip.address
        try:
            parsed = ipaddress.ip_interface(text)
        except ValueError as err:
            raise _fail(StatusCode.INVALID_ARGUMENT,
                        f"interface {interface.name}: bad address {ip.address}/{ip.mask}: {err}"
                        ) from err
        wanted.append((str(parsed.ip), parsed.network.prefixlen))
    return wanted


def _find_by_mac(links: list[rtnl.Link], mac: str) -> rtnl.Link:
    for link in links:
        if link.mac == mac.lower():
            return link
    have = ", ".join(f"{link.name} {link.mac or '-'}" for link in links)
    raise _fail(StatusCode.NOT_FOUND, f"no guest network device has MAC {mac} (guest has: {have})")


def apply_interface(nl: rtnl.Rtnl, interface: kata_types_pb2.Interface) -> rtnl.Link:
    """Find the device by MAC; give it the name, MTU and addresses asked for (and no other
    address, apart from the link-local ones the kernel makes); bring it up."""
    if not interface.hwAddr:
        raise _fail(StatusCode.INVALID_ARGUMENT, "UpdateInterface: hwAddr is required (the "
                    "guest device is found by its MAC)")
    name = interface.name or interface.device
    if name and (len(name) > MAX_IFNAME or "/" in name or name in (".", "..")):
        raise _fail(StatusCode.INVALID_ARGUMENT, f"interface name {name!r} is not valid")
    wanted = _requested_addresses(interface)
    links = nl.links()
    link = _find_by_mac(links, interface.hwAddr)
    if name and link.name != name:
        nl.set_link(link.index, up=False)
        for other in links:
            if other.name == name and other.index != link.index:
                # a device the kernel named what this one must be called: it gets its own
                # name when its UpdateInterface arrives
                nl.set_link(other.index, up=False)
                nl.set_link(other.index, name=f"cocoon{other.index}")
        nl.set_link(link.index, name=name)
    if interface.mtu:
        nl.set_link(link.index, mtu=interface.mtu)
    present = {(a.address, a.prefixlen) for a in nl.addresses()
               if a.index == link.index and a.scope != rtnl.RT_SCOPE_LINK}
    for address, prefixlen in present - set(wanted):
        nl.delete_address(link.index, address, prefixlen)
    for address, prefixlen in wanted:
        if (address, prefixlen) not in present:
            nl.add_address(link.index, address, prefixlen)
    nl.set_link(link.index, up=True)
    return next(candidate for candidate in nl.links() if candidate.index == link.index)


async def _wait_for_mac(mac: str, timeout: float) -> None:
    """A NIC hot-plugged into a restored VM appears a little after the host added it (the
    guest probes the PCI slot); wait for its MAC up to `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with rtnl.Rtnl() as nl:
            if any(link.mac == mac.lower() for link in nl.links()):
                return
        await asyncio.sleep(DEVICE_POLL)


async def update_interface(interface: kata_types_pb2.Interface,
                           device_wait: float = DEVICE_WAIT) -> kata_types_pb2.Interface:
    try:
        if interface.hwAddr:
            await _wait_for_mac(interface.hwAddr, device_wait)
        with rtnl.Rtnl() as nl:
            link = apply_interface(nl, interface)
            addresses = nl.addresses()
    except OSError as err:
        raise _kernel_error(err) from err
    logger.info("interface %s (%s): mtu %d, %d addresses", link.name, link.mac, link.mtu,
                len(interface.IPAddresses))
    return _interface_proto(link, addresses)


async def list_interfaces() -> agent_pb2.Interfaces:
    try:
        with rtnl.Rtnl() as nl:
            links, addresses = nl.links(), nl.addresses()
    except OSError as err:
        raise _kernel_error(err) from err
    return agent_pb2.Interfaces(Interfaces=[_interface_proto(link, addresses) for link in links])


# --- routes --------------------------------------------------------------------------------------


def route_from_proto(route: kata_types_pb2.Route, links: list[rtnl.Link]) -> rtnl.Route:
    """A Kata route (dest "a.b.c.d/n", "" or "default"; device by name) as a netlink route."""
    oif = 0
    if route.device:
        match = [link.index for link in links if link.name == route.device]
        if not match:
            raise _fail(StatusCode.NOT_FOUND, f"route {route.dest or 'default'}: no guest "
                        f"device named {route.device}")
        oif = match[0]
    dest = route.dest if route.dest not in ("", "default") else ""
    try:
        network = ipaddress.ip_network(dest, strict=False) if dest else None
        gateway = ipaddress.ip_address(route.gateway) if route.gateway else None
        source = ipaddress.ip_address(route.source) if route.source else None
    except ValueError as err:
        raise _fail(StatusCode.INVALID_ARGUMENT, f"route {route.dest or 'default'}: {err}"
                    ) from err
    versions = {x.version for x in (network, gateway, source) if x is not None}
    if len(versions) > 1:
        raise _fail(StatusCode.INVALID_ARGUMENT, f"route {route.dest or 'default'}: mixes IPv4 "
                    "and IPv6 addresses")
    version = versions.pop() if versions else (6 if route.family == kata_types_pb2.v6 else 4)
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    scope = route.scope if route.scope else (
        rtnl.RT_SCOPE_LINK if gateway is None and network is not None else rtnl.RT_SCOPE_UNIVERSE)
    return rtnl.Route(family=family, dst=str(network.network_address) if network else "",
                      dst_len=network.prefixlen if network else 0,
                      gateway=str(gateway) if gateway else "", oif=oif,
                      prefsrc=str(source) if source else "", scope=scope)


def _route_proto(route: rtnl.Route, names: dict[int, str]) -> kata_types_pb2.Route:
    return kata_types_pb2.Route(
        dest=f"{route.dst}/{route.dst_len}" if route.dst else "", gateway=route.gateway,
        device=names.get(route.oif, ""), source=route.prefsrc, scope=route.scope,
        family=_FAMILY_PROTO.get(route.family, kata_types_pb2.v4))


def _key(route: rtnl.Route) -> tuple[int, str, int, str, int]:
    return route.family, route.dst, route.dst_len, route.gateway, route.oif


def apply_routes(nl: rtnl.Rtnl, routes: list[kata_types_pb2.Route]) -> None:
    """Make the main table's routes on the guest's devices exactly those asked for.

    Routes the kernel made for an address (protocol kernel) stay. Routes without a gateway go
    first: a gateway must be reachable when the route through it is added.
    """
    links = nl.links()
    wanted = [route_from_proto(route, links) for route in routes]
    keys = {_key(route) for route in wanted}
    loopback = {link.index for link in links if link.name == "lo"}
    for current in nl.routes():
        if (current.table == rtnl.RT_TABLE_MAIN and current.protocol != rtnl.RTPROT_KERNEL
                and current.oif not in loopback and _key(current) not in keys):
            nl.delete_route(current)
    for route in sorted(wanted, key=lambda r: bool(r.gateway)):
        nl.replace_route(route)


def _main_routes(nl: rtnl.Rtnl) -> agent_pb2.Routes:
    names = {link.index: link.name for link in nl.links()}
    return agent_pb2.Routes(Routes=[_route_proto(route, names) for route in nl.routes()
                                    if route.table == rtnl.RT_TABLE_MAIN])


async def update_routes(routes: agent_pb2.Routes) -> agent_pb2.Routes:
    try:
        with rtnl.Rtnl() as nl:
            apply_routes(nl, list(routes.Routes))
            result = _main_routes(nl)
    except OSError as err:
        raise _kernel_error(err) from err
    logger.info("routes: %d asked for, %d in the main table", len(routes.Routes),
                len(result.Routes))
    return result


async def list_routes() -> agent_pb2.Routes:
    try:
        with rtnl.Rtnl() as nl:
            return _main_routes(nl)
    except OSError as err:
        raise _kernel_error(err) from err


# --- neighbours ----------------------------------------------------------------------------------


def apply_neighbors(nl: rtnl.Rtnl, neighbors: list[kata_types_pb2.ARPNeighbor]) -> None:
    names = {link.name: link.index for link in nl.links()}
    for neighbor in neighbors:
        address = neighbor.toIPAddress.address
        if neighbor.device not in names:
            raise _fail(StatusCode.NOT_FOUND, f"neighbour {address}: no guest device named "
                        f"{neighbor.device!r}")
        try:
            ipaddress.ip_address(address)
            rtnl.mac_bytes(neighbor.lladdr)
        except ValueError as err:
            raise _fail(StatusCode.INVALID_ARGUMENT, f"neighbour {address!r} "
                        f"({neighbor.lladdr!r}): {err}") from err
        nl.add_neighbor(names[neighbor.device], address, neighbor.lladdr,
                        state=neighbor.state or rtnl.NUD_PERMANENT, flags=neighbor.flags)


async def add_arp_neighbors(neighbors: agent_pb2.ARPNeighbors) -> None:
    try:
        with rtnl.Rtnl() as nl:
            apply_neighbors(nl, list(neighbors.ARPNeighbors))
    except OSError as err:
        raise _kernel_error(err) from err
