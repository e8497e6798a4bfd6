"""Networking through real VMs, driven with the `cocoon` CLI as an engine would drive it.

A namespace is set up as a CNI plugin would (`tests.framework.netns.FakeCni`: veth pairs with
addresses on both ends, the far ends in a second namespace playing the host), the bundle's
config.json names it (`linux.namespaces` network path), and the container is reached from the
far end: ping, and 10 MB through a TCP echo checksummed both ways. After every scenario the
namespace must hold exactly what the "engine" put there (no tap, no tc qdisc or filter).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.framework.cli import Cli
from tests.framework.netns import FakeCni, fake_cni, ip

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

ECHO_PORT = 7000
PAYLOAD = 10 << 20
# virtio-net feature bits (virtio spec 5.1.3): what the guest must have negotiated for the
# fast path, which QEMU offers only over a tap opened with IFF_VNET_HDR
OFFLOADS = {"CSUM": 0, "GUEST_CSUM": 1, "GUEST_TSO4": 7, "GUEST_TSO6": 8, "HOST_TSO4": 11,
            "HOST_TSO6": 12, "MRG_RXBUF": 15}


@pytest.fixture
def cli(state_root: Path) -> Cli:
    return Cli(state_root)


@pytest.fixture
def cni() -> Iterator[FakeCni]:
    with fake_cni("ccv") as made:
        yield made
        assert made.changes() == [], "the namespace no longer holds what the engine put there"


def bundle(path: Path, args: list[str], netns: str | None) -> Path:
    from cocoon.guest import assets
    from cocoon.oci.default import default_spec

    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(assets.ensure_busybox_rootfs(), path / "rootfs", symlinks=True)
    spec: dict[str, Any] = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": "rootfs", "readonly": False}
    for kind in ("bounding", "effective", "permitted"):  # ping needs raw sockets (as podman's)
        spec["process"]["capabilities"][kind].append("CAP_NET_RAW")
    for namespace in spec["linux"]["namespaces"]:
        if namespace["type"] == "network" and netns is not None:
            namespace["path"] = netns
    (path / "config.json").write_text(json.dumps(spec))
    return path


@pytest.fixture
def container(cli: Cli, tmp_path: Path) -> Iterator[list[str]]:
    """Ids to force-delete at the end, whatever happened."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        cli("delete", "--force", cid)


def run_detached(cli: Cli, tmp_path: Path, ids: list[str], cid: str, args: list[str],
                 netns: str | None) -> None:
    ids.append(cid)
    cli.ok("run", "--detach", "--bundle", str(bundle(tmp_path / cid, args, netns)), cid)


def ping_from_peer(cni: FakeCni, address: str) -> None:
    result = cni.exec_peer("busybox", "ping", "-c", "3", "-W", "10", address)
    assert result.returncode == 0, f"ping {address}: {result.stdout}{result.stderr}"


def echo(sock: socket.socket, size: int) -> tuple[str, str]:
    """Send `size` random bytes while reading the echo; sha256 of what went and came back."""
    sent, received = hashlib.sha256(), hashlib.sha256()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            block = os.urandom(1 << 16)
            left = size
            while left:
                chunk = block[:min(left, len(block))]
                sock.sendall(chunk)
                sent.update(chunk)
                left -= len(chunk)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as err:
            failure.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    total = 0
    while chunk := sock.recv(1 << 16):
        received.update(chunk)
        total += len(chunk)
    thread.join()
    assert not failure, failure
    assert total == size
    return sent.hexdigest(), received.hexdigest()


def test_a_container_is_reached_through_its_veth(cli: Cli, cni: FakeCni, tmp_path: Path,
                                                 container: list[str]) -> None:
    peer = cni.add_veth("eth0", "10.240.0.2/24", "10.240.0.1/24")
    ip("addr", "add", "fd40::2/64", "dev", "eth0", "nodad", netns=cni.name)
    ip("addr", "add", "fd40::1/64", "dev", peer, "nodad", netns=cni.peer)
    cni.record()
    run_detached(cli, tmp_path, container, "net1", [
        "sh", "-c", f"while true; do nc -l -p {ECHO_PORT} -e tee /tmp/got; done"], cni.path)

    ping_from_peer(cni, "10.240.0.2")
    ping_from_peer(cni, "fd40::2")  # IPv6 too
    assert "3 packets received" in cli.ok("exec", "net1", "ping", "-c", "3", "10.240.0.1")

    sock = cni.connect("10.240.0.2", ECHO_PORT, timeout=60)
    started = time.monotonic()
    with sock:
        sent, back = echo(sock, PAYLOAD)
    seconds = time.monotonic() - started
    assert back == sent  # host -> container -> host, intact
    arrived = cli.ok("exec", "net1", "sha256sum", "/tmp/got").split()[0]
    assert arrived == sent  # what the container received, checked inside the guest
    print(f"10 MiB echoed in {seconds:.2f} s")

    inside = cli.ok("exec", "net1", "ip", "-o", "link")
    assert "eth0" in inside and "tap" not in inside

    # checksum and segmentation offloads both ways: without them every stream is cut into
    # MTU-sized frames and checksummed in the guest, under emulation
    features = cli.ok("exec", "net1", "cat", "/sys/class/net/eth0/device/features").strip()
    missing = [name for name, bit in OFFLOADS.items() if features[bit:bit + 1] != "1"]
    assert not missing, f"virtio-net offloads not negotiated: {missing} (features {features})"


def test_two_interfaces_and_a_route_of_the_namespace(cli: Cli, cni: FakeCni, tmp_path: Path,
                                                     container: list[str]) -> None:
    cni.add_veth("eth0", "10.241.0.2/24", "10.241.0.1/24")
    cni.add_veth("eth1", "10.242.0.2/24", "10.242.0.1/24", mtu=1400)
    ip("addr", "add", "10.243.0.1/32", "dev", "lo", netns=cni.peer)  # only reachable via eth1
    ip("route", "add", "10.243.0.0/24", "via", "10.242.0.1", "dev", "eth1", netns=cni.name)
    ip("route", "add", "default", "via", "10.241.0.1", netns=cni.name)
    cni.record()
    run_detached(cli, tmp_path, container, "net2", ["sleep", "1000"], cni.path)

    ping_from_peer(cni, "10.241.0.2")
    ping_from_peer(cni, "10.242.0.2")
    routes = cli.ok("exec", "net2", "ip", "route")
    assert "10.243.0.0/24 via 10.242.0.1 dev eth1" in routes
    assert "default via 10.241.0.1 dev eth0" in routes
    assert "dev eth1" in cli.ok("exec", "net2", "ip", "route", "get", "10.243.0.1")
    assert "1 packets received" in cli.ok("exec", "net2", "ping", "-c", "1", "-W", "10",
                                          "10.243.0.1")
    links = cli.ok("exec", "net2", "ip", "-o", "link")
    assert "eth1: " in links and "mtu 1400" in links.split("eth1: ")[1].splitlines()[0]


def test_no_namespace_or_an_empty_one_gives_loopback_only(
        cli: Cli, tmp_path: Path, container: list[str]) -> None:
    name = f"ccv-empty-{os.getpid()}"
    ip("netns", "add", name)
    try:
        for cid, netns in (("lo1", f"/var/run/netns/{name}"), ("lo2", None)):
            run_detached(cli, tmp_path, container, cid, ["sleep", "1000"], netns)
            links = [line.split(":")[1].strip()
                     for line in cli.ok("exec", cid, "ip", "-o", "link").splitlines()]
            assert links == ["lo"], f"{cid}: {links}"
            cli.ok("delete", "--force", cid)
    finally:
        ip("netns", "delete", name)


@pytest.mark.parametrize("case", ["missing", "bridge", "no-address"])
def test_what_cannot_be_carried_fails_create_with_one_line(
        cli: Cli, cni: FakeCni, tmp_path: Path, container: list[str], case: str) -> None:
    netns, named = cni.path, ""
    if case == "missing":
        netns, named = "/var/run/netns/ccv-does-not-exist", "ccv-does-not-exist does not exist"
    elif case == "bridge":
        ip("link", "add", "br9", "type", "bridge", netns=cni.name)
        ip("addr", "add", "10.244.0.2/24", "dev", "br9", netns=cni.name)
        ip("link", "set", "br9", "up", netns=cni.name)
        named = "br9 (bridge: only veth can be carried)"
    else:
        cni.add_veth("eth0", "10.245.0.2/24", "10.245.0.1/24")
        ip("addr", "flush", "dev", "eth0", netns=cni.name)
        named = "eth0 (veth without an IP address)"
    cni.record()
    container.append("bad")
    result = cli("run", "--detach", "--bundle", str(bundle(tmp_path / "bad", ["true"], netns)),
                 "bad")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert cli("state", "bad").returncode != 0  # nothing was left registered


def test_delete_after_a_killed_monitor_takes_its_redirects_off_the_veth(
        cli: Cli, cni: FakeCni, tmp_path: Path, state_root: Path,
        container: list[str]) -> None:
    """A monitor killed with -9 cannot detach: delete removes its tc redirect and ingress
    qdisc from the engine's veth, so the next container in the namespace has a network."""
    import signal

    cni.add_veth("eth0", "10.246.0.2/24", "10.246.0.1/24")
    cni.record()
    run_detached(cli, tmp_path, container, "mon1", ["sleep", "1000"], cni.path)
    ping_from_peer(cni, "10.246.0.2")
    monitor = json.loads((state_root / "mon1" / "state.json").read_text())["monitor_pid"]
    os.kill(monitor, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{monitor}") and time.monotonic() < deadline:
        time.sleep(0.05)
    cli.ok("delete", "--force", "mon1")
    assert cni.changes() == [], "delete left Cocoon's redirect on the engine's veth"
    run_detached(cli, tmp_path, container, "mon2", ["sleep", "1000"], cni.path)
    ping_from_peer(cni, "10.246.0.2")
    cli.ok("delete", "--force", "mon2")
