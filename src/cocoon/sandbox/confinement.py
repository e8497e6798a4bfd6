"""What the sandbox monitor keeps of root's capabilities once its VM is up, and the drop.

Before, the monitor needs most of root: it execs QEMU and virtiofsd (which get their own,
smaller sets), mounts the share, enters cgroups. After, it only serves its clients and the
agent channel, and still:

- CAP_SYS_ADMIN: enters the container's network namespace (a network attached later, the
  port mirror's listeners, the redirects' removal at teardown) and unmounts the share;
- CAP_NET_ADMIN: makes taps and tc redirects there, and removes them;
- CAP_NET_BIND_SERVICE: the port mirror listens on the ports below 1024 the guest listens on;
- CAP_DAC_OVERRIDE, CAP_FOWNER: removes its VM directory, whatever owner and mode the files
  the guest (through virtiofsd) or QEMU (its own user) left in it have;
- CAP_KILL: QEMU runs as a user of its own (`cocoon.hypervisor.vmuser`), and a QEMU that
  does not quit when asked (hung, or taken over) must still be killed;
- CAP_SYS_NICE, a pool member only: being claimed, it renices itself, QEMU and virtiofsd
  back to 0 (a raise, which needs it).

Signals to virtiofsd need nothing (it runs as uid 0). Everything else goes: from
the bounding set too, and no_new_privs is set, so no program the monitor could still run
would get more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys

from cocoon.linux import privileges

logger = logging.getLogger("cocoon.sandbox.confinement")

KEEPS = ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_DAC_OVERRIDE",
         "CAP_FOWNER", "CAP_KILL")
POOL_KEEPS = (*KEEPS, "CAP_SYS_NICE")


def kept(pooled: bool) -> int:
    """The capability mask a monitor keeps (a pool member's or a sandbox's)."""
    return privileges.mask(POOL_KEEPS if pooled else KEEPS)


def watch_children_without_threads() -> None:
    """Wait for QEMU and virtiofsd through pidfds, not a thread per child (Python 3.11's
    default): capabilities are per thread, and such a thread, started before the drop,
    would keep all of root's for as long as its child lives. (3.12 does this by default.)"""
    if sys.version_info < (3, 12) and hasattr(asyncio, "PidfdChildWatcher"):
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
        watcher.attach_loop(asyncio.get_running_loop())


def confine_monitor(pooled: bool) -> None:
    """Drop to `kept(pooled)` on the event loop's thread, and give the loop a fresh thread
    pool: the old one's threads, started before the drop, keep what they had."""
    if os.geteuid() != 0:
        return
    keep = kept(pooled)
    privileges.confine(keep)
    loop = asyncio.get_running_loop()
    old = getattr(loop, "_default_executor", None)
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        thread_name_prefix="monitor"))
    if isinstance(old, concurrent.futures.ThreadPoolExecutor):
        old.shutdown(wait=False)
    logger.info("monitor keeps %s", ", ".join(privileges.names(keep)))
