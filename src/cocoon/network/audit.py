"""Finding what Cocoon's networking left behind in network namespaces: the leak check's view.

A Cocoon tap lives only while a process (QEMU) holds its fd, so a tap is never a leak by
itself: its holder is. What can outlive a VM is a tc redirect on the engine's veth. A
namespace holding a redirect of Cocoon's priority but no Cocoon tap is therefore left over;
one with both belongs to a VM that is running (maybe another user's), and is not reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pyroute2 import IPRoute

from cocoon.errors import NetworkError
from cocoon.network import tc
from cocoon.network.netns import run_in_netns
from cocoon.network.plan import is_cocoon_tap

HOST_NETNS = "/proc/1/ns/net"
NAMED_NETNS = Path("/run/netns")


def named_namespaces() -> list[str]:
    return sorted(str(p) for p in NAMED_NETNS.iterdir()) if NAMED_NETNS.is_dir() else []


def orphans(netns: str) -> list[str]:
    """'<netns>: tc redirect on <device>' for each Cocoon redirect without a Cocoon tap."""
    def work() -> list[str]:
        with IPRoute() as ipr:
            if any(is_cocoon_tap(link.get("ifname") or "") for link in ipr.get_links()):
                return []
            return [f"{netns}: tc redirect on {name}" for name in tc.redirected(ipr)]
    try:
        return run_in_netns(netns, work)
    except NetworkError:
        return []  # deleted while we looked


def scan(namespaces: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for netns in namespaces:
        found.update(orphans(netns))
    return found
