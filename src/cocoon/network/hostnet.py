"""The host network (`--network host`, `hostNetwork: true`) for a VM, without touching the host.

A container that asks for no network namespace gets the host's network under runc. A VM cannot
share the host's interfaces, and Cocoon never moves, addresses or bridges them. Instead, as Lima
and Docker Desktop do, the guest gets one more virtio-net device on QEMU's user-mode network
(slirp): its connections leave through ordinary sockets of the QEMU process on the host, so the
guest reaches whatever the host reaches (the host itself at the gateway, 10.0.2.2, which slirp
maps to the host's 127.0.0.1), and its listening ports are mirrored on the host's loopback by
the port mirror (sandbox/portmirror.py). Nothing is made on the host: no tap, no route, no
firewall rule.
"""

from __future__ import annotations

import socket

from cocoon.hypervisor.config import NetInterface
from cocoon.linux import rtnl
from cocoon.network.plan import Endpoint, NetworkPlan

# slirp's defaults (QEMU's -netdev user): the guest's address, the gateway and DNS relay
GUEST_ADDRESS = "10.0.2.15"
PREFIX_LEN = 24
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
MAC = "02:c0:c0:00:00:01"  # locally administered; the slirp network is the VM's alone
DEVICE = "eth0"
MTU = 1500
_INDEX = 1  # the endpoint's index within the plan (the guest finds the device by MAC)


def user_nic() -> NetInterface:
    return NetInterface(mac=MAC, mtu=MTU, user=True)


def user_plan() -> NetworkPlan:
    """The guest side: eth0 at 10.0.2.15/24 with the default route through slirp's gateway."""
    link = rtnl.Link(index=_INDEX, name=DEVICE, flags=0, mtu=MTU, mac=MAC)
    address = rtnl.Address(index=_INDEX, family=socket.AF_INET, address=GUEST_ADDRESS,
                           prefixlen=PREFIX_LEN, scope=rtnl.RT_SCOPE_UNIVERSE)
    default = rtnl.Route(family=socket.AF_INET, gateway=GATEWAY, oif=_INDEX)
    return NetworkPlan(endpoints=(Endpoint(link=link, addresses=(address,), tap=""),),
                       routes=(default,))
