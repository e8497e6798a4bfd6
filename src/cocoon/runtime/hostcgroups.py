"""The runtime's use of host cgroups (`cocoon.hostcgroup`): one per container, at its
`cgroupsPath`, made at create with the spec's limits; the VM's host processes and the container's
shims in it; `update` writes it beside the guest's; delete removes it.

A container that runs in another's VM (a pod: `runtime.joins`) gets its own cgroup, holding its
shims; the VM stays in the cgroup of the container it was started for. When that container goes
first, the VM's processes move to the cgroup of one that remains, so the VM never sits in a
cgroup that is gone from every state.
"""

from __future__ import annotations

import contextlib

from cocoon.errors import CocoonError
from cocoon.hostcgroup import HostCgroup
from cocoon.oci.spec import LinuxResources, Spec
from cocoon.oci.state import ContainerState, StateStore
from cocoon.sandbox.launcher import sandbox_processes
from cocoon.sandbox.layout import Layout

MIB = 1 << 20


def make(spec: Spec, container_id: str, vm_memory_mib: int,
         systemd: bool = False) -> HostCgroup:
    """Create the container's host cgroup with its limits (removed again if a limit fails)."""
    linux = spec.linux
    cgroup = HostCgroup.plan(linux.cgroups_path if linux else "", container_id,
                             vm_memory_mib * MIB, systemd)
    cgroup.create()
    try:
        resources = linux.resources if linux and linux.resources else LinuxResources()
        cgroup.apply(resources)
    except BaseException:
        cgroup.remove(timeout=0)
        raise
    return cgroup


def of(state: ContainerState) -> HostCgroup | None:
    return HostCgroup.from_json(state.host_cgroup)


def adopt_sandbox(cgroup: HostCgroup, layout: Layout) -> None:
    """Move a sandbox that was started elsewhere (a pool member) in: monitor, QEMU, virtiofsd."""
    cgroup.enter(sandbox_processes(layout.root, shims=False))


def hand_over(store: StateStore, state: ContainerState, layout: Layout,
              others: list[str]) -> None:
    """`state` leaves a VM that `others` keep: if its cgroup holds the VM, move the VM's
    processes to the first of the others' cgroups."""
    mine = of(state)
    if mine is None or not others or not mine.holds(state.monitor_pid):
        return
    with contextlib.suppress(CocoonError, OSError):
        heir = of(store.load(others[0]))
        if heir is not None:
            heir.enter(sandbox_processes(layout.root, shims=False))


def remove(state: ContainerState) -> None:
    cgroup = of(state)
    if cgroup is not None:
        cgroup.remove()
