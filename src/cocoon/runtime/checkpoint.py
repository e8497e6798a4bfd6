"""`checkpoint` and the guest half of `restore`: CRIU in the guest, images on the host.

A sandbox is not migrated whole (QEMU 7.2 refuses to migrate a VM with a virtio-fs device, and a
running container's rootfs is on one); the container's process tree is, as runc does it: the
image directory (`--image-path`) is bound into the sandbox's share, the agent runs CRIU into it,
and the VM is stopped. `restore` is `create` with a new sandbox for the same bundle, whose agent
restores the tree from the images instead of starting the process (docs/design.md, "Checkpoint
and restore").
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from cocoon.errors import ConfigError, ContainerStateError
from cocoon.oci.state import ContainerState, StateStore, Status, validate_id
from cocoon.protocols.gen import kata_oci_pb2
from cocoon.runtime import sharing, teardown
from cocoon.runtime.control import call_agent
from cocoon.runtime.options import CheckpointOptions
from cocoon.sandbox.layout import Layout
from cocoon.sandbox.share import Share

IMAGES = "images"
DESCRIPTORS = "descriptors.json"  # written first by the guest's dump (agent/checkpoint.py)
WORK = "work"


def _image_dir(path: Path, make: bool) -> Path:
    path = path.absolute()
    if make:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--image-path {path}: {err.strerror}", path=str(path)) from err
    elif not path.is_dir():
        raise ConfigError(f"--image-path {path} does not exist or is not a directory",
                          path=str(path))
    return path


def check_images(options: CheckpointOptions) -> None:
    """Before a VM starts for a restore: the image directory holds a checkpoint."""
    images = _image_dir(options.image_path, make=False)
    if not (images / DESCRIPTORS).is_file():
        raise ConfigError(f"--image-path {images} holds no checkpoint (no {DESCRIPTORS})",
                          path=str(images))


def _exposed(stack: contextlib.ExitStack, share: Share, container_id: str,
             options: CheckpointOptions, make: bool) -> tuple[str, str]:
    """The image (and work) directories bound into the share, taken out when `stack` closes;
    their guest paths."""
    images = _image_dir(options.image_path, make)
    guest_images = share.expose_checkpoint(container_id, IMAGES, images)
    stack.callback(share.hide, container_id, IMAGES)
    guest_work = ""
    if options.work_path is not None:
        work = _image_dir(options.work_path, make=True)
        guest_work = share.expose_checkpoint(container_id, WORK, work)
        stack.callback(share.hide, container_id, WORK)
    return guest_images, guest_work


def checkpoint(store: StateStore, container_id: str, options: CheckpointOptions) -> None:
    """Dump the running container's processes into `options.image_path`; unless
    `leave_running`, stop its VM (the container is then stopped; `delete` removes it)."""
    state = store.load(validate_id(container_id))
    with store.lock(state.id):
        state = store.load(state.id)
        status = state.current_status()
        if status not in (Status.RUNNING, Status.PAUSED):  # paused: through its frozen cgroup
            raise ContainerStateError(f"cannot checkpoint container {state.id}: it is {status}",
                                      id=state.id, status=str(status))
        spec = store.config(state.id)
        if spec.process is not None and spec.process.terminal:
            raise ConfigError(f"cannot checkpoint container {state.id}: it has a terminal "
                              "(process.terminal), which a checkpoint cannot carry")
        layout = Layout(Path(state.vm_dir))
        with sharing.locked(layout):
            others = sharing.others(layout, state.id, store)
        if others:
            raise ContainerStateError(f"cannot checkpoint container {state.id}: it shares its "
                                      f"VM with {', '.join(others)}", id=state.id)
        asyncio.run(_checkpoint(store, state, layout, options))


async def _checkpoint(store: StateStore, state: ContainerState, layout: Layout,
                      options: CheckpointOptions) -> None:
    share = Share(layout.shared)
    with contextlib.ExitStack() as stack:
        images, work = _exposed(stack, share, state.id, options, make=True)
        await call_agent(state, lambda agent: agent.checkpoint_container(
            state.id, images, work_dir=work, leave_running=options.leave_running,
            tcp_established=options.tcp_established, file_locks=options.file_locks))
    if not options.leave_running:
        await teardown.stop(store, state)


def restore_processes(state: ContainerState, layout: Layout, oci: kata_oci_pb2.Spec,
                      options: CheckpointOptions) -> None:
    """In `restore`, where `create` would create the process: the agent restores it from the
    images (the rest of `create`, its undo included, is the same)."""
    share = Share(layout.shared)
    with contextlib.ExitStack() as stack:
        images, work = _exposed(stack, share, state.id, options, make=False)
        asyncio.run(call_agent(state, lambda agent: agent.restore_container(
            state.id, oci, images, work_dir=work, tcp_established=options.tcp_established,
            file_locks=options.file_locks)))
