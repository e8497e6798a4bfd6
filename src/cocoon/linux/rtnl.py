"""A small rtnetlink client and model: links, addresses, routes and neighbours.

The guest agent configures its interfaces with it; the host reads a network namespace with
pyroute2 and hands the agent the plain values defined here. pyroute2 cannot run in the guest
image: importing it pulls in `ssl` and `unittest.mock`, which the image does not carry, and
costs seconds of interpreter time under TCG. The agent needs a dozen message kinds, so they are
encoded here with `struct`: messages are built and parsed without I/O (`encode`, `parse`, the
`*_from` decoders), and `Rtnl` only sends them on a NETLINK_ROUTE socket and collects the
answer. Kernel refusals surface as `OSError` with the kernel's errno and the request that
caused them.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# message types (linux/rtnetlink.h, linux/netlink.h)
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK = 16, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30

NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO = 1, 3, 4, 18
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 2, 4, 5, 6, 7, 15
NDA_DST, NDA_LLADDR = 1, 2

IFF_UP = 0x1
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL, RTPROT_BOOT = 2, 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTATTR = struct.Struct("=HH")
_NLA_F_MASK = 0x3FFF  # the type bits of an attribute (without NESTED and NET_BYTEORDER)


def _align(n: int) -> int:
    return (n + 3) & ~3


# --- encoding and parsing (no I/O) ---------------------------------------------------------------


def attr(kind: int, value: bytes) -> bytes:
    """One rtattr, padded to four bytes."""
    data = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return data + b"\0" * (_align(len(data)) - len(data))


def encode(msg_type: int, flags: int, seq: int, header: bytes, attrs: bytes = b"") -> bytes:
    body = header + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


@dataclass(frozen=True)
class Message:
    type: int
    flags: int
    seq: int
    body: bytes


def parse(data: bytes) -> Iterator[Message]:
    """The netlink messages in one datagram; a truncated one raises ValueError."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink message at offset {offset} (length {length})")
        yield Message(msg_type, flags, seq, data[offset + _NLMSGHDR.size:offset + length])
        offset += _align(length)


def attrs_of(data: bytes) -> dict[int, bytes]:
    """rtattrs -> {type: payload}; the last of repeated types wins."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found[kind & _NLA_F_MASK] = data[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return found


def _cstr(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _ip(family: int, value: bytes) -> str:
    return socket.inet_ntop(family, value)


def _u32(value: bytes) -> int:
    return int(struct.unpack("=I", value[:4])[0])


def mac_text(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def mac_bytes(text: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' -> six bytes; anything else raises ValueError."""
    parts = text.split(":")
    if len(parts) != 6 or not all(1 <= len(part) <= 2 for part in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(part, 16) for part in parts)


def ip_family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    kind: str = ""

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True)
class Address:
    index: int
    family: int
    address: str
    prefixlen: int
    scope: int


@dataclass(frozen=True)
class Route:
    family: int
    dst: str = ""          # "" = default route
    dst_len: int = 0
    gateway: str = ""
    oif: int = 0
    prefsrc: str = ""
    scope: int = RT_SCOPE_UNIVERSE
    protocol: int = RTPROT_BOOT
    table: int = RT_TABLE_MAIN
    type: int = RTN_UNICAST
    priority: int = 0


@dataclass(frozen=True)
class Neighbor:
    index: int
    family: int
    address: str
    mac: str
    state: int


def link_from(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    attrs = attrs_of(body[_IFINFOMSG.size:])
    kind = _cstr(attrs_of(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND, b"")) \
        if IFLA_LINKINFO in attrs else ""
    return Link(index=index, name=_cstr(attrs.get(IFLA_IFNAME, b"")), flags=flags,
                mtu=_u32(attrs[IFLA_MTU]) if IFLA_MTU in attrs else 0,
                mac=mac_text(attrs.get(IFLA_ADDRESS, b"")), kind=kind)


def address_from(body: bytes) -> Address:
    family, prefixlen, _flags, scope, index = _IFADDRMSG.unpack_from(body)
    attrs = attrs_of(body[_IFADDRMSG.size:])
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS, b"")
    return Address(index=index, family=family, address=_ip(family, raw) if raw else "",
                   prefixlen=prefixlen, scope=scope)


def route_from(body: bytes) -> Route:
    family, dst_len, _src_len, _tos, table, protocol, scope, rtype, _flags = \
        _RTMSG.unpack_from(body)
    attrs = attrs_of(body[_RTMSG.size:])
    return Route(
        family=family, dst=_ip(family, attrs[RTA_DST]) if RTA_DST in attrs else "",
        dst_len=dst_len,
        gateway=_ip(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else "",
        oif=_u32(attrs[RTA_OIF]) if RTA_OIF in attrs else 0,
        prefsrc=_ip(family, attrs[RTA_PREFSRC]) if RTA_PREFSRC in attrs else "",
        scope=scope, protocol=protocol,
        table=_u32(attrs[RTA_TABLE]) if RTA_TABLE in attrs else table, type=rtype,
        priority=_u32(attrs[RTA_PRIORITY]) if RTA_PRIORITY in attrs else 0)


def neighbor_from(body: bytes) -> Neighbor:
    family, index, state, _flags, _type = _NDMSG.unpack_from(body)
    attrs = attrs_of(body[_NDMSG.size:])
    return Neighbor(index=index, family=family,
                    address=_ip(family, attrs[NDA_DST]) if NDA_DST in attrs else "",
                    mac=mac_text(attrs.get(NDA_LLADDR, b"")), state=state)


def set_link_request(seq: int, index: int, *, name: str | None = None, mtu: int | None = None,
                     up: bool | None = None) -> bytes:
    flags = change = 0
    if up is not None:
        flags, change = (IFF_UP if up else 0), IFF_UP
    attrs = b""
    if name is not None:
        attrs += attr(IFLA_IFNAME, name.encode() + b"\0")
    if mtu is not None:
        attrs += attr(IFLA_MTU, struct.pack("=I", mtu))
    return encode(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq,
                  _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change), attrs)


def address_request(seq: int, index: int, address: str, prefixlen: int,
                    delete: bool = False) -> bytes:
    family = ip_family(address)
    raw = socket.inet_pton(family, address)
    attrs = attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    header = _IFADDRMSG.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    if delete:
        return encode(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, header, attrs)
    if family == socket.AF_INET6:  # usable at once: the engine already vetted the address
        attrs += attr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
    return encode(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq,
                  header, attrs)


def route_request(seq: int, route: Route, delete: bool = False) -> bytes:
    attrs = b""
    if route.dst:
        attrs += attr(RTA_DST, socket.inet_pton(route.family, route.dst))
    if route.gateway:
        attrs += attr(RTA_GATEWAY, socket.inet_pton(route.family, route.gateway))
    if route.prefsrc:
        attrs += attr(RTA_PREFSRC, socket.inet_pton(route.family, route.prefsrc))
    if route.oif:
        attrs += attr(RTA_OIF, struct.pack("=I", route.oif))
    if route.priority:
        attrs += attr(RTA_PRIORITY, struct.pack("=I", route.priority))
    attrs += attr(RTA_TABLE, struct.pack("=I", route.table))
    header = _RTMSG.pack(route.family, route.dst_len, 0, 0, min(route.table, 255),
                         route.protocol, route.scope, route.type, 0)
    if delete:
        return encode(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq, header, attrs)
    return encode(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq,
                  header, attrs)


def neighbor_request(seq: int, index: int, address: str, mac: str,
                     state: int = NUD_PERMANENT, flags: int = 0) -> bytes:
    family = ip_family(address)
    attrs = attr(NDA_DST, socket.inet_pton(family, address)) + attr(NDA_LLADDR, mac_bytes(mac))
    return encode(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq,
                  _NDMSG.pack(family, index, state, flags, 0), attrs)


def dump_request(msg_type: int, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    header = {RTM_GETLINK: _IFINFOMSG.pack(family, 0, 0, 0, 0),
              RTM_GETADDR: _IFADDRMSG.pack(family, 0, 0, 0, 0),
              RTM_GETROUTE: _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
              RTM_GETNEIGH: _NDMSG.pack(family, 0, 0, 0, 0)}[msg_type]
    return encode(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, header)


def error_of(message: Message) -> int:
    """The errno an NLMSG_ERROR carries (0 = an acknowledgement)."""
    return -int(struct.unpack_from("=i", message.body)[0])


# --- the socket ----------------------------------------------------------------------------------


class Rtnl:
    """One NETLINK_ROUTE socket in the caller's network namespace; requests run one at a time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def call(self, request: bytes, what: str) -> list[Message]:
        """Send one request; its dump replies, or [] once acknowledged. OSError on refusal."""
        seq = _NLMSGHDR.unpack_from(request)[3]
        self.sock.send(request)
        replies: list[Message] = []
        while True:
            data = self.sock.recv(1 << 16)
            for message in parse(data):
                if message.seq != seq:
                    continue
                if message.type == NLMSG_ERROR:
                    code = error_of(message)
                    if code:
                        raise OSError(code, f"{what}: {os.strerror(code)}")
                    return replies
                if message.type == NLMSG_DONE:
                    return replies
                replies.append(message)
                if not message.flags & NLM_F_MULTI:
                    return replies

    def links(self) -> list[Link]:
        return [link_from(m.body) for m in
                self.call(dump_request(RTM_GETLINK, self.next_seq()), "list links")
                if m.type == RTM_NEWLINK]

    def addresses(self) -> list[Address]:
        return [address_from(m.body) for m in
                self.call(dump_request(RTM_GETADDR, self.next_seq()), "list addresses")
                if m.type == RTM_NEWADDR]

    def routes(self) -> list[Route]:
        return [route_from(m.body) for m in
                self.call(dump_request(RTM_GETROUTE, self.next_seq()), "list routes")
                if m.type == RTM_NEWROUTE]

    def neighbors(self) -> list[Neighbor]:
        return [neighbor_from(m.body) for m in
                self.call(dump_request(RTM_GETNEIGH, self.next_seq()), "list neighbours")
                if m.type == RTM_NEWNEIGH]

    def set_link(self, index: int, *, name: str | None = None, mtu: int | None = None,
                 up: bool | None = None) -> None:
        self.call(set_link_request(self.next_seq(), index, name=name, mtu=mtu, up=up),
                  f"set link {index}")

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        self.call(address_request(self.next_seq(), index, address, prefixlen),
                  f"add address {address}/{prefixlen}")

    def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        self.call(address_request(self.next_seq(), index, address, prefixlen, delete=True),
                  f"delete address {address}/{prefixlen}")

    def replace_route(self, route: Route) -> None:
        self.call(route_request(self.next_seq(), route), f"add route {describe(route)}")

    def delete_route(self, route: Route) -> None:
        try:
            self.call(route_request(self.next_seq(), route, delete=True),
                      f"delete route {describe(route)}")
        except OSError as err:
            if err.errno != errno.ESRCH:
                raise

    def add_neighbor(self, index: int, address: str, mac: str, state: int = NUD_PERMANENT,
                     flags: int = 0) -> None:
        self.call(neighbor_request(self.next_seq(), index, address, mac, state, flags),
                  f"add neighbour {address}")


def describe(route: Route) -> str:
    dest = f"{route.dst}/{route.dst_len}" if route.dst else "default"
    via = f" via {route.gateway}" if route.gateway else ""
    return f"{dest}{via}" + (f" dev {route.oif}" if route.oif else "")
