"""Carrying a namespace without a VM: the taps, the tc redirects both ways (proved by frames
read from and written to the tap fd), refusals, and a namespace left as the engine made it.

Also covers the pieces attach is made of: running code in a namespace, fd-bound taps and the
tc redirect with an engine's own ingress qdisc.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from cocoon import network
from cocoon.errors import NetworkError
from cocoon.network import tc
from cocoon.network.attachment import attach
from cocoon.network.netns import run_in_netns
from cocoon.network.tap import open_tap
from tests.framework.netns import FakeCni, fake_cni, ip
from tests.framework.netns import tc as tc_cmd

VNET_HDR = 10  # struct virtio_net_hdr in front of every frame on an IFF_VNET_HDR tap


@pytest.fixture
def cni() -> Iterator[FakeCni]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with fake_cni("cca") as made:
        made.add_veth("eth0", "10.233.0.2/24", "10.233.0.1/24", mtu=1400)
        ip("route", "add", "default", "via", "10.233.0.1", netns=made.name)
        made.record()
        yield made


def _inode(path: str) -> int:
    return os.stat(path).st_ino


def test_run_in_netns_moves_only_its_own_thread(cni: FakeCni) -> None:
    mine = _inode("/proc/thread-self/ns/net")
    seen = run_in_netns(cni.path, lambda: _inode("/proc/thread-self/ns/net"))
    assert seen == _inode(cni.path) != mine
    assert _inode("/proc/thread-self/ns/net") == mine
    with pytest.raises(ZeroDivisionError):
        run_in_netns(cni.path, lambda: 1 // 0)
    with pytest.raises(NetworkError, match="network namespace /run/netns/nope does not exist"):
        run_in_netns("/run/netns/nope", lambda: None)


def test_a_tap_lives_as_long_as_its_fd(cni: FakeCni) -> None:
    fd = run_in_netns(cni.path, lambda: open_tap("tap7_cocoon"))
    assert "tap7_cocoon" in ip("link", "show", netns=cni.name)
    os.close(fd)
    assert "tap7_cocoon" not in ip("link", "show", netns=cni.name)
    with pytest.raises(NetworkError, match="must be 1-15 bytes"):
        open_tap("a-name-longer-than-ifnamsiz")


def test_tc_keeps_an_ingress_qdisc_it_did_not_add(cni: FakeCni) -> None:
    tc_cmd("qdisc", "add", "dev", "eth0", "ingress", netns=cni.name)
    cni.record()

    def work() -> tuple[bool, list[str], list[str]]:
        with IPRoute() as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            lo = ipr.link_lookup(ifname="lo")[0]
            added = tc.redirect(ipr, eth0, lo, "eth0")
            during = tc.redirected(ipr)
            tc.remove_redirect(ipr, eth0, drop_qdisc=added)
            tc.remove_redirect(ipr, eth0, drop_qdisc=added)  # twice: already gone is fine
            return added, during, tc.redirected(ipr)

    added, during, after = run_in_netns(cni.path, work)
    assert (added, during, after) == (False, ["eth0"], [])
    assert cni.changes() == []


def test_nothing_to_carry_means_no_attachment(cni: FakeCni) -> None:
    assert network.attach(None) is None
    assert network.attach("new") is None
    ip("netns", "add", f"{cni.name}-empty")
    try:
        assert network.attach(f"/run/netns/{cni.name}-empty") is None
    finally:
        ip("netns", "delete", f"{cni.name}-empty")


def test_refusals_name_the_namespace_or_interface(cni: FakeCni) -> None:
    with pytest.raises(NetworkError, match="network namespace /run/netns/nope does not exist"):
        network.attach("/run/netns/nope")
    with pytest.raises(NetworkError, match="is the host's own"):
        network.attach("/proc/self/ns/net")
    ip("link", "add", "extra0", "type", "veth", "peer", "name", "extra1", netns=cni.name)
    ip("link", "set", "extra0", "up", netns=cni.name)
    with pytest.raises(NetworkError, match=r"extra0 \(veth without an IP address\)"):
        network.attach(cni.path)
    assert "cocoon" not in ip("link", "show", netns=cni.name)


def _read_frame(fd: int, containing: bytes, timeout: float = 5.0) -> bytes:
    """The first frame on the tap that contains `containing` (IPv6 chatter comes too)."""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, "no frame reached the tap"
        frame = os.read(fd, 65536)[VNET_HDR:]
        if containing in frame:
            return frame


def test_attach_redirects_both_ways_and_detach_restores_the_namespace(cni: FakeCni) -> None:
    attachment = attach(cni.path)
    assert attachment is not None
    try:
        (nic,) = attachment.nics
        veth_mac = ip("link", "show", "eth0", netns=cni.name).split("link/ether ")[1].split()[0]
        assert (nic.mac, nic.mtu, nic.tap_fd) == (veth_mac, 1400, attachment.tap_fds[0])
        shown = tc_cmd("filter", "show", "dev", "eth0", "ingress", netns=cni.name)
        assert "Egress Redirect to device tap0_cocoon" in shown
        assert "mtu 1400" in ip("link", "show", "tap0_cocoon", netns=cni.name)

        # host -> container: a UDP datagram from the "host" arrives on the tap (the VM's side)
        sender = cni.peer_socket(socket.SOCK_DGRAM)
        probe = b"cocoon-probe-" + os.urandom(8)
        ip("neigh", "replace", "10.233.0.2", "lladdr", veth_mac, "dev", cni.veths[0],
           netns=cni.peer)  # no ARP round: the frame itself is what must arrive
        sender.sendto(probe, ("10.233.0.2", 9))
        frame = _read_frame(nic.tap_fd or -1, probe)
        assert frame[:6] == bytes.fromhex(veth_mac.replace(":", ""))

        # container -> host: a frame written to the tap leaves through the veth
        receiver = cni.peer_socket(socket.SOCK_DGRAM)
        receiver.bind(("10.233.0.1", 4789))
        receiver.settimeout(5)
        reply = b"cocoon-reply-" + os.urandom(8)
        os.write(nic.tap_fd or -1, b"\0" * VNET_HDR + _udp_frame(frame, reply, 4789))
        assert receiver.recvfrom(100)[0] == reply
        sender.close()
        receiver.close()
    finally:
        attachment.detach()
    assert cni.changes() == []
    attachment.detach()  # twice is harmless


def _udp_frame(request: bytes, payload: bytes, port: int) -> bytes:
    """An Ethernet/IPv4/UDP frame answering `request` (addresses swapped), checksum off."""
    dst_mac, src_mac = request[6:12], request[0:6]
    ip_header = request[14:34]
    src_ip, dst_ip = ip_header[16:20], ip_header[12:16]
    udp = struct.pack("!HHHH", 9, port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src_ip,
                         dst_ip)
    checksum = _ip_checksum(header)
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    return dst_mac + src_mac + b"\x08\x00" + header + udp


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_attach_cleans_up_when_setup_fails(cni: FakeCni, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    calls: list[int] = []
    real = tc.redirect

    def second_fails(ipr: IPRoute, source: int, target: int, name: str) -> bool:
        calls.append(source)
        if len(calls) == 2:
            raise NetworkError("injected failure")
        return real(ipr, source, target, name)

    monkeypatch.setattr(tc, "redirect", second_fails)
    with pytest.raises(NetworkError, match="injected failure"):
        attach(cni.path)
    assert cni.changes() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("netns:")]


def test_the_audit_reports_a_redirect_only_once_its_tap_is_gone(cni: FakeCni) -> None:
    from cocoon.network import audit

    where = f"/run/netns/{cni.name}"
    assert where in audit.named_namespaces()
    assert audit.orphans(where) == []
    attachment = attach(cni.path)
    assert attachment is not None
    try:
        assert audit.scan([where]) == set()  # a running VM's redirect is no leak
        attachment.close_fds()  # as if QEMU died and nobody detached
        assert audit.scan([where, audit.HOST_NETNS]) == {f"{where}: tc redirect on eth0"}
    finally:
        attachment.detach()
    assert audit.orphans(where) == []
    assert cni.changes() == []


def test_the_redirects_are_recorded_for_a_cleanup_after_the_monitor(tmp_path: Path) -> None:
    from cocoon.network.attachment import NetworkAttachment, _Redirect, read_record
    from cocoon.network.plan import NetworkPlan

    attachment = NetworkAttachment(netns="/run/netns/x", plan=NetworkPlan(endpoints=()),
                                   redirects=[_Redirect(4, "eth0", True)])
    attachment.record(tmp_path / "network.json")
    assert read_record(tmp_path / "network.json") == {
        "netns": "/run/netns/x", "redirects": [{"index": 4, "name": "eth0", "drop_qdisc": True}]}
    (tmp_path / "bad.json").write_text('{"netns": 1, "redirects": [{"index": "x"}]}')
    assert read_record(tmp_path / "bad.json") is None
    assert read_record(tmp_path / "missing.json") is None
