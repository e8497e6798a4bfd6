"""Host-side networking: a container's network namespace carried into its VM (tc-filter model).

`attach()` is the entry point the sandbox monitor calls; pyroute2 is imported only when there is
a namespace to carry, so sandboxes without networking do not pay for it at start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocoon.network.attachment import NetworkAttachment as NetworkAttachment

NEW_NAMESPACE = "new"

# pyroute2 logs every netlink message at DEBUG: keep it out of a debug monitor's log
logging.getLogger("pyroute2").setLevel(logging.WARNING)


def attach(netns: str | None) -> NetworkAttachment | None:
    """Taps and redirects for the namespace at path `netns` (blocking; see network.attachment);
    None when there is nothing to carry: no namespace, a fresh one ("new"), loopback only."""
    if netns is None or netns == NEW_NAMESPACE:
        return None
    from cocoon.network.attachment import attach as attach_namespace

    return attach_namespace(netns)
