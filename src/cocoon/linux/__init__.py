"""Linux helpers that the guest agent and the host share: ctypes system calls (`syscalls`),
rtnetlink (`rtnl`), path resolution inside a root (`paths`), capability names (`caps`) and
mount options (`mounts`).

The guest image carries this package, so it imports the standard library only: nothing of the
host side (pyroute2, QEMU, cocoon.sandbox and the like) and nothing of the agent.
"""
