"""Host-side networking: a container's network namespace carried into its VM (tc-filter model).

`attach()` is the entry point the sandbox monitor calls; pyroute2 is imported only when there is
a namespace to carry, so sandboxes without networking do not pay for it at start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

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



def read_leftovers(record_path: Path) -> dict[str, Any] | None:
    """The tc redirects a sandbox recorded making (`NetworkAttachment.record`), read before
    its directory goes; None when it carried no namespace."""
    if not record_path.exists():
        return None
    from cocoon.network.attachment import read_record

    return read_record(record_path)


def remove_leftovers(record: dict[str, Any]) -> None:
    """Remove from the container's namespace the redirects of a sandbox whose monitor died
    before it could (blocking): what `read_leftovers` returned."""
    from cocoon.network.attachment import remove_recorded

    remove_recorded(record)
