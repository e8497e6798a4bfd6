"""One pod = one VM: the sandbox the shim daemon starts for its first container and shares.

The VM is a sandbox monitor process (`cocoon.sandbox.launcher.start_sandbox`), the same one the
OCI CLI uses; the shim reaches the agent through the monitor's socket. The VM starts with the
pod's first container (the CRI sandbox container, or a standalone container) and stops when the
last container of the pod is deleted. The containers of a pod share the namespaces the pod shares:
CRI writes them as /proc/<sandbox pid>/ns/<type> paths, which mean nothing in the guest, so they
are rewritten to `container:<sandbox id>`, which the agent joins.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path

from cocoon.config import current as settings
from cocoon.errors import CocoonError, SandboxError
from cocoon.hostcgroup import HostCgroup
from cocoon.metrics import labels as metric_labels
from cocoon.oci.spec import LinuxNamespace, Spec
from cocoon.runtime import hostcgroups
from cocoon.runtime.guestspec import CONTAINER_NS_PREFIX, guest_spec, on_host_network
from cocoon.runtime.sizing import vm_memory_mib
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.launcher import SandboxHandle, start_sandbox, stop_sandbox_async
from cocoon.sandbox.layout import DEBUG_CONSOLE, Layout, SandboxConfig
from cocoon.sandbox.share import Share, remove_vm_dir
from cocoon.shim.address import PodRef

logger = logging.getLogger("cocoon.shim.pod")

POD_SHARED_NAMESPACES = ("ipc", "uts", "pid")
CGROUP_FILE = "cocoon-cgroup.json"  # in a container's bundle: its host cgroup, for `shim delete`


def save_cgroup(bundle: Path, cgroup: HostCgroup) -> None:
    """Note the container's host cgroup in its bundle, so a `shim delete` after the shim died
    can remove it."""
    tmp = bundle / f".{CGROUP_FILE}.tmp"
    tmp.write_text(json.dumps(cgroup.to_json()))
    os.replace(tmp, bundle / CGROUP_FILE)


def saved_cgroup(bundle: Path) -> HostCgroup | None:
    try:
        return HostCgroup.from_json(json.loads((bundle / CGROUP_FILE).read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def share_pod_namespaces(spec: Spec, ref: PodRef) -> Spec:
    """For an app container: join the sandbox container's ipc/uts/pid where CRI shares them."""
    if ref.sandbox or spec.linux is None:
        return spec
    namespaces = tuple(
        LinuxNamespace(type=ns.type, path=f"{CONTAINER_NS_PREFIX}{ref.pod_id}")
        if ns.type in POD_SHARED_NAMESPACES and ns.path else ns
        for ns in spec.linux.namespaces)
    return dataclasses.replace(spec, linux=dataclasses.replace(spec.linux, namespaces=namespaces))


def network_namespace(spec: Spec) -> str | None:
    """The pod's network namespace path on the host (None: the host's, or none was made)."""
    if spec.linux is None:
        return None
    namespace = spec.linux.namespace("network")
    return namespace.path if namespace is not None and namespace.path else None


class Pod:
    """The pod's VM. Its directory is `vm_dir`, or, for a VM taken from the warm pool, the pool
    member's, to which `vm_dir` is then a symlink (so that `shim delete` finds it)."""

    def __init__(self, pod_id: str, vm_dir: Path, debug: bool = False) -> None:
        self.id = pod_id
        self.home = vm_dir
        self.layout = Layout(vm_dir)
        self.share = Share(self.layout.shared)
        self.debug = debug
        self.handle: SandboxHandle | None = None
        self.cgroup: HostCgroup | None = None  # the host cgroup the VM's processes are in
        self._client: SandboxClient | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._client is not None

    @property
    def agent(self) -> AgentClient:
        """The pod's agent, through its sandbox monitor."""
        if self._client is None:
            raise SandboxError(f"pod {self.id}: its VM is not running", pod=self.id)
        return self._client.agent

    @property
    def memory_mib(self) -> int | None:
        """The running VM's memory (None before it runs)."""
        return self.handle.config.memory_mib if self.handle is not None else None

    async def ensure_started(self, spec: Spec, cgroup: HostCgroup | None = None) -> bool:
        """Boot the pod's VM unless it runs, in `cgroup` on the host; True when this call
        booted it."""
        async with self._lock:
            if self._client is not None:
                return False
            if os.path.lexists(self.home):  # left by a shim that died under the same pod id
                await stop_pod_vm(self.home)
            config = SandboxConfig(
                sandbox_id=self.id, vm_dir=str(self.home), memory_mib=vm_memory_mib(spec),
                hostname=spec.hostname or "", netns=network_namespace(spec),
                host_network=on_host_network(spec), debug=self.debug,
                cgroup_procs=cgroup.procs_files if cgroup is not None else (),
                extra={"labels": metric_labels.from_annotations(spec.annotations),
                       DEBUG_CONSOLE: settings().agent.debug_console})
            logger.info("pod %s: starting its VM in %s", self.id, self.home)
            self.handle = await asyncio.to_thread(start_sandbox, config)
            if self.handle.layout.root != self.home:
                self.home.symlink_to(self.handle.layout.root)
            self.layout = self.handle.layout
            self.share = Share(self.layout.shared)
            try:
                if cgroup is not None and self.layout.root != self.home:
                    # a pool member: started elsewhere, moved in now
                    hostcgroups.adopt_sandbox(cgroup, self.layout)
                self.cgroup = cgroup
                self._client = await self.handle.connect(timeout=10.0)
            except BaseException:
                await stop_sandbox_async(self.layout, grace=0.5)
                self.handle = None
                raise
            logger.info("pod %s: VM ready (boot id %s)", self.id,
                        self.handle.info.get("boot_id", "?"))
            return True

    def guest_spec(self, container_id: str, spec: Spec, rootfs: Path, ref: PodRef) -> Spec:
        """Expose the container's rootfs and volumes in the share; the spec the guest gets.

        Binds made now reach virtiofsd (started with the VM) because the share is a shared
        mount whose propagation virtiofsd's mount namespace receives.
        """
        return guest_spec(share_pod_namespaces(spec, ref), rootfs, self.share, container_id)

    async def stop(self) -> None:
        """Stop the VM and remove its directory; safe to call when it is not running."""
        async with self._lock:
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(CocoonError, OSError):
                    await client.close()
            if self.handle is not None or os.path.lexists(self.home):
                logger.info("pod %s: stopping its VM", self.id)
                await stop_pod_vm(self.home, self.layout)
            self.handle = None
            if self.cgroup is not None:
                await asyncio.to_thread(self.cgroup.remove)
                self.cgroup = None


async def stop_pod_vm(home: Path, layout: Layout | None = None, grace: float = 1.0) -> None:
    """Stop the VM of a pod whose VM directory is `home` (or the pool member it links to)."""
    if home.is_symlink():
        layout = Layout(home.resolve())
        home.unlink()
    layout = layout or Layout(home)
    await stop_sandbox_async(layout, grace=grace)
    remove_vm_dir(layout.root)
