"""Host-side cgroups of a sandbox: hierarchies (`hierarchy`), `cgroupsPath` (`path`), limits as
file writes (`settings`), and the cgroup of one container (`manager.HostCgroup`)."""

from cocoon.hostcgroup.manager import HostCgroup

__all__ = ["HostCgroup"]
