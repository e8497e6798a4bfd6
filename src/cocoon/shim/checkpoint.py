"""The shim's checkpoint and restore: containerd's directories, CRIU in the guest.

`ctr task checkpoint` makes the shim dump the task's processes into the directory containerd
names (`CheckpointTaskRequest.path`, which containerd then stores as a checkpoint image); a
task created with a checkpoint (`ctr containers restore --live`) is restored from the directory
containerd unpacked it into when it is started, as runc's shim does. Both directories are bound
into the pod's share for the call (see runtime/checkpoint.py for the CLI's side).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import any_pb2

from cocoon.errors import RPCError
from cocoon.protocols.gen import kata_oci_pb2, runc_options_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.share import Share
from cocoon.ttrpc.status import StatusCode

IMAGES = "images"
DESCRIPTORS = "descriptors.json"  # written by the guest's dump (agent/checkpoint.py)
OPTIONS_TYPE = runc_options_pb2.CheckpointOptions.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Options:
    exit: bool = False  # containerd's default, as runc's shim: the task keeps running
    tcp_established: bool = False
    file_locks: bool = False
    image_path: str = ""


def parse_options(options: any_pb2.Any) -> Options:
    """runc's CheckpointOptions when containerd sent them (it does for runc's runtime names);
    nothing else is understood, and no options mean containerd's defaults."""
    if not options.type_url:
        return Options()
    if not options.type_url.endswith(OPTIONS_TYPE):
        raise RPCError(StatusCode.INVALID_ARGUMENT, f"checkpoint options of type "
                       f"{options.type_url} are not understood (only {OPTIONS_TYPE})")
    parsed = runc_options_pb2.CheckpointOptions()
    parsed.ParseFromString(options.value)
    if parsed.terminal:
        raise RPCError(StatusCode.UNIMPLEMENTED, "checkpoint of a terminal is not supported")
    return Options(exit=parsed.exit, tcp_established=parsed.open_tcp,
                   file_locks=parsed.file_locks, image_path=parsed.image_path)


def images_of(request_path: str, options: Options) -> Path:
    path = Path(options.image_path or request_path)
    if not path.is_absolute() or not path.is_dir():
        raise RPCError(StatusCode.INVALID_ARGUMENT,
                       f"checkpoint directory {path} does not exist or is not a directory")
    return path


async def checkpoint(agent: AgentClient, share: Share, container_id: str, path: Path,
                     options: Options) -> None:
    guest = share.expose_checkpoint(container_id, IMAGES, path)
    try:
        await agent.checkpoint_container(container_id, guest, leave_running=not options.exit,
                                         tcp_established=options.tcp_established,
                                         file_locks=options.file_locks)
    finally:
        share.hide(container_id, IMAGES)


def check_restorable(path: Path) -> None:
    """At create: the checkpoint containerd unpacked is one of ours."""
    if not (path / DESCRIPTORS).is_file():
        raise RPCError(StatusCode.INVALID_ARGUMENT,
                       f"checkpoint {path} was not made by Cocoon (no {DESCRIPTORS})")


async def restore(agent: AgentClient, share: Share, container_id: str,
                  oci: kata_oci_pb2.Spec, path: Path) -> None:
    check_restorable(path)
    guest = share.expose_checkpoint(container_id, IMAGES, path)
    with contextlib.ExitStack() as stack:
        stack.callback(share.hide, container_id, IMAGES)
        await agent.restore_container(container_id, oci, guest)
