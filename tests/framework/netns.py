"""Network namespaces set up the way a CNI plugin does, for the networking tests and bench.

`FakeCni` makes a container namespace (what an engine passes in config.json) and a second one
playing the host, joined by veth pairs with addresses on both ends, so a test never touches the
real host's interfaces. `peer_socket()` opens a socket in the "host" namespace: a client there
reaches the container as a client on a real host would reach it through the engine's network.

What the engine put in the container namespace is recorded when it is made (`record()`), and
`changes()` tells what differs now: after a container ran in it, nothing may (no tap, no tc
qdisc or filter, the same links, addresses and routes).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.network.netns import run_in_netns

NETNS_DIR = Path("/run/netns")


def ip(*args: str, netns: str | None = None) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def tc(*args: str, netns: str) -> str:
    argv = ["ip", "netns", "exec", netns, "tc", *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class FakeCni:
    """A container namespace and a "host" namespace; `add_veth` joins them like CNI's bridge."""

    name: str
    peer: str
    recorded: str = ""
    veths: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str = "cct") -> FakeCni:
        token = secrets.token_hex(3)
        cni = cls(name=f"{prefix}-{token}", peer=f"{prefix}-{token}-h")
        ip("netns", "add", cni.name)
        ip("netns", "add", cni.peer)
        ip("link", "set", "lo", "up", netns=cni.peer)
        return cni

    @property
    def path(self) -> str:
        """What config.json names: /var/run/netns/NAME, as podman and CNI write it."""
        return f"/var/run/netns/{self.name}"

    @property
    def peer_path(self) -> str:
        return str(NETNS_DIR / self.peer)

    def add_veth(self, container_if: str, container_ip: str, peer_ip: str,
                 mtu: int = 1500) -> str:
        """A veth pair: `container_if` with `container_ip` (CIDR) in the container namespace,
        the other end with `peer_ip` in the host namespace; returns the host end's name."""
        peer_if = f"v{len(self.veths)}{self.name[-6:]}"
        ip("link", "add", container_if, "mtu", str(mtu), "netns", self.name, "type", "veth",
           "peer", "name", peer_if, "mtu", str(mtu), "netns", self.peer)
        ip("addr", "add", container_ip, "dev", container_if, netns=self.name)
        ip("link", "set", container_if, "up", netns=self.name)
        ip("addr", "add", peer_ip, "dev", peer_if, netns=self.peer)
        ip("link", "set", peer_if, "up", netns=self.peer)
        self.veths.append(peer_if)
        return peer_if

    def state(self) -> str:
        """Links, addresses, routes, neighbours and tc of the container namespace, as text."""
        parts = [ip("-o", "link", "show", netns=self.name),
                 ip("-o", "addr", "show", netns=self.name),
                 ip("route", "show", "table", "all", netns=self.name),
                 ip("neigh", "show", "nud", "permanent", netns=self.name),
                 tc("qdisc", "show", netns=self.name)]
        for line in parts[0].splitlines():
            device = line.split(":")[1].strip().split("@")[0]
            parts.append(tc("filter", "show", "dev", device, "ingress", netns=self.name))
        return "\n".join(parts)

    def record(self) -> None:
        """Remember the namespace as the engine left it."""
        self.recorded = _stable(self.state())

    def changes(self) -> list[str]:
        """Lines of `state()` that differ from what `record()` saw."""
        before, now = set(self.recorded.splitlines()), set(_stable(self.state()).splitlines())
        return sorted(f"- {line}" for line in before - now) + \
            sorted(f"+ {line}" for line in now - before)

    def peer_socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket in the "host" namespace (usable from any thread)."""
        return run_in_netns(self.peer_path, lambda: socket.socket(socket.AF_INET, kind))

    def connect(self, address: str, port: int, timeout: float = 10.0) -> socket.socket:
        sock = self.peer_socket()
        sock.settimeout(timeout)
        sock.connect((address, port))
        return sock

    def exec_peer(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.peer, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def delete(self) -> None:
        for name in (self.name, self.peer):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _stable(text: str) -> str:
    """Drop what changes on its own: address lifetimes, DAD progress, counters, and the IPv6
    link-local addresses and routes the kernel adds when a link comes up."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith(("Sent", "backlog")) or "fe80::" in line:
            continue
        kept = [part for part in line.split("\\") if "valid_lft" not in part]
        lines.append(" ".join(" ".join(kept).replace("tentative", "").split()))
    return "\n".join(lines)


@contextmanager
def fake_cni(prefix: str = "cct") -> Iterator[FakeCni]:
    cni = FakeCni.create(prefix)
    try:
        yield cni
    finally:
        cni.delete()
