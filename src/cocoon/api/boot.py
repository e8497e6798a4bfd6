"""Bringing a sandbox up and down on the host, the way `cocoon create` and `delete` do it.

Up: the image resolved, the host cgroup made with the limits, the VM started by the launcher
(`start_sandbox`: a pooled clone, a clone of a template, or a cold boot, whichever the host
has), the overlay root mounted in the sandbox directory and exposed in the share with the
mounts (`runtime.guestspec`). Down: the monitor asked to stop (killed when it does not
answer), its directory unmounted and removed, the cgroup removed. Both block: the asyncio side
calls them in a thread. A start that fails part way undoes what it did.

A sandbox is not an OCI container: it has no state under the OCI state root (`cocoon list`
does not show it), only its VM directory under the VM root (`COCOON_VM_DIR`).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cocoon.api import image as images
from cocoon.api import rootfs
from cocoon.api import spec as specs
from cocoon.hostcgroup import HostCgroup
from cocoon.oci import convert
from cocoon.oci.spec import Spec
from cocoon.protocols.gen import kata_oci_pb2
from cocoon.runtime import guestspec, hostcgroups
from cocoon.runtime.sizing import vm_memory_mib
from cocoon.sandbox.launcher import stop_sandbox
from cocoon.sandbox.layout import Layout, SandboxConfig, vm_dir_for
from cocoon.sandbox.share import Share

OWNER = "cocoon-api"
STOP_GRACE = 1.0


@dataclass(frozen=True)
class Options:
    image: images.ImageSource
    memory_mib: int | None
    vcpus: int
    network: bool
    mounts: Sequence[specs.Mount]
    env: dict[str, str]
    hostname: str
    boot_timeout: float


@dataclass
class Booted:
    sandbox_id: str
    layout: Layout
    cgroup: HostCgroup
    spec: Spec
    oci: kata_oci_pb2.Spec
    image: images.Image
    info: dict[str, object]


def new_id() -> str:
    return "sandbox-" + secrets.token_hex(6)


def boot(options: Options, sandbox_id: str) -> Booted:
    from cocoon.sandbox.launcher import start_sandbox

    image = images.resolve(options.image)
    busybox = images.busybox_binary()
    if options.vcpus < 1:
        from cocoon.errors import ConfigError

        raise ConfigError(f"vcpus: {options.vcpus}: a sandbox needs at least one",
                          field="vcpus")
    env = specs.merge_env(image.config.env, options.env)
    layout = Layout(vm_dir_for(OWNER, sandbox_id))
    probe = specs.container_spec(rootfs=image.rootfs, busybox=busybox, env=env,
                                 cwd=image.config.cwd, memory_mib=options.memory_mib,
                                 mounts=options.mounts, network=options.network,
                                 hostname=options.hostname)
    guestspec.check(probe, image.rootfs)  # refused before a VM starts for it
    with contextlib.ExitStack() as undo:
        vm_memory = vm_memory_mib(probe)
        cgroup = hostcgroups.make(probe, sandbox_id, vm_memory)
        undo.callback(cgroup.remove)
        config = SandboxConfig(sandbox_id=sandbox_id, vm_dir=str(layout.root),
                               memory_mib=vm_memory, vcpus=options.vcpus,
                               hostname=options.hostname, netns=None,
                               host_network=options.network,
                               boot_timeout=options.boot_timeout,
                               cgroup_procs=cgroup.procs_files)
        handle = start_sandbox(config)
        layout = handle.layout  # a pooled clone lives in the pool member's directory
        undo.callback(stop_sandbox, layout, STOP_GRACE)
        if layout.root != config.layout.root:
            hostcgroups.adopt_sandbox(cgroup, layout)
        merged = rootfs.mount_overlay(image.rootfs, layout.root)
        spec = specs.container_spec(rootfs=merged, busybox=busybox, env=env,
                                    cwd=image.config.cwd, memory_mib=options.memory_mib,
                                    mounts=options.mounts, network=options.network,
                                    hostname=options.hostname)
        gspec = guestspec.guest_spec(spec, merged, Share(layout.shared), sandbox_id)
        booted = Booted(sandbox_id, layout, cgroup, spec, convert.spec_to_proto(gspec), image,
                        dict(handle.info))
        undo.pop_all()
    return booted


def shut_down(booted: Booted) -> None:
    """Stop the VM and remove everything of the sandbox on the host; safe to repeat."""
    try:
        stop_sandbox(booted.layout, STOP_GRACE)
    finally:
        booted.cgroup.remove()
