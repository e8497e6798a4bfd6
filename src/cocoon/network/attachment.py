"""Carrying a container's network namespace into its VM, and taking it back out.

`attach(netns)` reads the namespace, plans what to carry (refusing what cannot be), and inside
the namespace opens a tap per veth and redirects veth<->tap with tc. The taps' fds go to QEMU
as virtio-net devices with the veths' MACs and MTUs; after the agent is up, `configure_guest`
gives the guest the addresses, routes and neighbours. `detach()` removes the redirects and
closes what is still open; the taps die with their last fd, so the namespace is left holding
exactly what the engine put there. Blocking calls: the monitor runs them with
`asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from cocoon.errors import NetworkError
from cocoon.hypervisor.config import NetInterface
from cocoon.network import guest, inspect, tc
from cocoon.network.netns import run_in_netns, same_namespace
from cocoon.network.plan import NetworkPlan, plan
from cocoon.network.tap import open_tap
from cocoon.sandbox.agentclient import AgentClient

logger = logging.getLogger("cocoon.network.attach")

@dataclass
class _Redirect:
    index: int
    name: str
    drop_qdisc: bool


@dataclass
class NetworkAttachment:
    """The taps and redirects of one sandbox in one namespace."""

    netns: str
    plan: NetworkPlan
    tap_fds: list[int] = field(default_factory=list)
    redirects: list[_Redirect] = field(default_factory=list)

    @property
    def nics(self) -> tuple[NetInterface, ...]:
        """The virtio-net devices for QEMU: one per tap, with the veth's MAC and MTU."""
        return tuple(NetInterface(mac=e.link.mac.lower(), tap_fd=fd, mtu=e.link.mtu or None)
                     for e, fd in zip(self.plan.endpoints, self.tap_fds, strict=True))

    def close_fds(self) -> None:
        """Drop this process's tap fds (QEMU holds its own copies once it has started)."""
        for fd in self.tap_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.tap_fds = [-1 for _ in self.tap_fds]

    def record(self, path: Path) -> None:
        """Write down what `detach` would remove, for a cleanup after this process is gone."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"netns": self.netns,
                                   "redirects": [asdict(r) for r in self.redirects]}))
        os.replace(tmp, path)

    async def configure_guest(self, agent: AgentClient) -> None:
        await guest.configure(agent, self.plan)

    def detach(self) -> None:
        """Remove the redirects and close the taps; safe to call twice and after a crash."""
        redirects, self.redirects = self.redirects, []
        self.close_fds()
        if not redirects:
            return

        def work() -> None:
            with IPRoute() as ipr:
                for redirect in redirects:
                    tc.remove_redirect(ipr, redirect.index, redirect.drop_qdisc)

        try:
            run_in_netns(self.netns, work)
        except NetworkError as err:
            if not os.path.exists(self.netns):
                logger.info("network namespace %s is gone: nothing to detach", self.netns)
                return
            logger.warning("detaching from %s: %s", self.netns, err)
            raise
        logger.info("detached from %s", self.netns)


def _setup(attachment: NetworkAttachment) -> None:
    """Inside the namespace: a tap per endpoint, redirected both ways."""
    with IPRoute() as ipr:
        for endpoint in attachment.plan.endpoints:
            link = endpoint.link
            fd = open_tap(endpoint.tap)
            attachment.tap_fds.append(fd)
            tap_index = ipr.link_lookup(ifname=endpoint.tap)[0]
            ipr.link("set", index=tap_index, mtu=link.mtu, state="up")
            added = tc.redirect(ipr, link.index, tap_index, link.name)
            attachment.redirects.append(_Redirect(link.index, link.name, added))
            tc.redirect(ipr, tap_index, link.index, endpoint.tap)
            logger.info("%s: %s (%s, mtu %d) <-> %s", attachment.netns, link.name, link.mac,
                        link.mtu, endpoint.tap)


def attach(netns: str) -> NetworkAttachment | None:
    """Carry the namespace at path `netns` into a VM about to start; None when it holds
    loopback only."""
    if os.path.exists(netns) and same_namespace(netns):
        raise NetworkError(f"network namespace {netns} is the host's own: Cocoon carries only "
                           "a container's namespace into a VM", netns=netns)
    wanted = plan(inspect.snapshot(netns), netns)
    if wanted.empty:
        logger.info("%s holds loopback only: the guest gets loopback only", netns)
        return None
    attachment = NetworkAttachment(netns=netns, plan=wanted)
    try:
        run_in_netns(netns, lambda: _setup(attachment))
    except BaseException:
        with contextlib.suppress(NetworkError):
            attachment.detach()
        raise
    return attachment


def read_record(path: Path) -> dict[str, Any] | None:
    """A record `NetworkAttachment.record` wrote (None if there is none, or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
        return {"netns": str(data["netns"]),
                "redirects": [{"index": int(r["index"]), "name": str(r["name"]),
                               "drop_qdisc": bool(r["drop_qdisc"])} for r in data["redirects"]]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_recorded(record: dict[str, Any]) -> None:
    """Remove the redirects of a record (a killed monitor's) from the engine's devices in its
    namespace: each only while the device at that index still has the recorded name."""
    netns = record["netns"]
    redirects = [_Redirect(**r) for r in record["redirects"]]

    def work() -> list[str]:
        removed = []
        with IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for redirect in redirects:
                if names.get(redirect.index) == redirect.name:
                    tc.remove_redirect(ipr, redirect.index, redirect.drop_qdisc)
                    removed.append(redirect.name)
        return removed

    if not os.path.exists(netns):
        return
    try:
        removed = run_in_netns(netns, work)
    except NetworkError as err:
        logger.warning("removing a dead sandbox's redirects from %s: %s", netns, err)
        return
    if removed:
        logger.info("%s: removed the tc redirects a dead sandbox left on %s", netns,
                    ", ".join(removed))

