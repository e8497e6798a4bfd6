"""Redirecting frames between the engine's veth and the VM's tap with tc (Kata's tc-filter model).

Each direction is an ingress qdisc on the source device and one u32 filter that matches every
frame (`match u32 0 0`: this host's kernels lack the `matchall` classifier) with a mirred action
that redirects it to the other device's egress. The veth keeps its addresses and routes, so the
engine finds its namespace as it left it once the redirect is gone.

Cocoon's filters are recognised by their priority (`PRIO`), so teardown removes exactly them, and
the ingress qdisc only when Cocoon added it.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cocoon.errors import NetworkError

logger = logging.getLogger("cocoon.network.tc")

INGRESS = 0xFFFF0000     # the ingress qdisc's handle, ffff:
PRIO = 0xC0C0            # Cocoon's filters (49344)
ETH_P_ALL = 0x0003
CLASSID = 0x00010001     # u32 wants a class id; an ingress redirect never uses it
MATCH_ALL = "0x0/0x0+0"  # u32 key: value 0 under mask 0 at offset 0


def has_ingress(ipr: IPRoute, index: int) -> bool:
    return any(q.get("kind") == "ingress" for q in ipr.get_qdiscs(index=index))


def redirect(ipr: IPRoute, source: int, target: int, source_name: str) -> bool:
    """Send every frame arriving on `source` out of `target`; True if the ingress qdisc was
    added here (and is Cocoon's to remove)."""
    added = False
    try:
        if not has_ingress(ipr, source):
            ipr.tc("add", "ingress", source)
            added = True
        ipr.tc("add-filter", "u32", source, parent=INGRESS, prio=PRIO, protocol=ETH_P_ALL,
               target=CLASSID, keys=[MATCH_ALL],
               action={"kind": "mirred", "direction": "egress", "action": "redirect",
                       "ifindex": target})
    except NetlinkError as err:
        if added:
            remove_redirect(ipr, source, drop_qdisc=True)
        raise NetworkError(f"cannot redirect {source_name} with tc: {err}",
                           device=source_name, errno=err.code) from err
    return added


def remove_redirect(ipr: IPRoute, index: int, drop_qdisc: bool) -> None:
    """Remove Cocoon's filter from `index` (and its ingress qdisc if Cocoon added it).

    A device or filter that is already gone is not an error: teardown runs after crashes too.
    """
    try:
        if drop_qdisc:
            ipr.tc("del", "ingress", index)  # takes its filters with it
        else:
            # no kind: a kind would make pyroute2 encode (and demand) u32 options
            ipr.tc("del-filter", index=index, parent=INGRESS, prio=PRIO, protocol=ETH_P_ALL)
    except NetlinkError as err:
        if err.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise NetworkError(f"cannot remove the tc redirect of link {index}: {err}",
                               index=index, errno=err.code) from err
        logger.debug("tc redirect of link %d already gone: %s", index, err)


def redirected(ipr: IPRoute) -> list[str]:
    """Names of the devices in this namespace that carry a Cocoon filter."""
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    found = []
    for index, name in names.items():
        filters: list[Any] = list(ipr.get_filters(index=index, parent=INGRESS))
        if any(f["info"] >> 16 == PRIO for f in filters):
            found.append(str(name))
    return found
