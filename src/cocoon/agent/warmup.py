"""A throwaway container through the agent's own paths (`cocoon.GuestAgent/WarmUp`).

Its root is an empty directory in the guest's tmpfs with the guest's /usr bound in read-only
(busybox lives there), so nothing comes from the host: a VM with no share yet (a template being
made, a clone waiting in the pool) can run it.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from cocoon.agent.service import AgentService
from cocoon.oci import convert
from cocoon.oci.default import default_spec
from cocoon.oci.spec import parse_spec
from cocoon.protocols.gen import agent_pb2

ROOT = "/run/cocoon-warmup"
CONTAINER_ID = ".warmup"  # a name no host can create (ids may not start with a dot)


def _spec(rootfs: str, own_usr: bool) -> dict[str, Any]:
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["root"] = {"path": rootfs, "readonly": not own_usr}
    spec["hostname"] = "warmup"
    if own_usr:
        spec["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                               "options": ["rbind", "ro"]})
    return spec


def _empty_tree(spec: dict[str, Any], rootfs: str) -> None:
    for mount in spec["mounts"]:
        os.makedirs(rootfs + mount["destination"], exist_ok=True)
    for name in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{name}", f"{rootfs}/{name}")


async def warm_up(agent: AgentService, rootfs: str = "") -> float:
    """Run the throwaway container in `rootfs` (a tree in the guest), or in an empty tree
    with the guest's /usr."""
    started = time.monotonic()
    shutil.rmtree(ROOT, ignore_errors=True)
    spec = _spec(rootfs or f"{ROOT}/rootfs", own_usr=not rootfs)
    if not rootfs:
        _empty_tree(spec, f"{ROOT}/rootfs")
    state = agent.state
    oci = convert.spec_to_proto(parse_spec(spec, source="warm-up spec"))
    try:
        await agent.create(CONTAINER_ID, oci)
        container = state.container(CONTAINER_ID)
        process = container.process("")
        await container.start()
        await process.wait()
    finally:
        if CONTAINER_ID in state.containers:
            await agent.RemoveContainer(agent_pb2.RemoveContainerRequest(
                container_id=CONTAINER_ID, timeout=5), None)  # type: ignore[arg-type]
        shutil.rmtree(ROOT, ignore_errors=True)
    return time.monotonic() - started
