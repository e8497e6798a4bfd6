"""What the shim knows about each task process (a container's init, or an exec) and its rules.

The guest runs the process; the shim keeps containerd's view of it: status, exit status and
time, the stdio it relays, and two ordering guards: `start_lock` (the exit of a process is
published only after its start was) and `exited` (Wait returns once the exit is recorded and
published).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.errors import RPCError
from cocoon.hostcgroup import HostCgroup
from cocoon.protocols.gen import containerd_types_task_pb2 as types
from cocoon.protocols.gen import kata_oci_pb2
from cocoon.shim.address import PodRef
from cocoon.shim.stdin import StdinPump
from cocoon.shim.stdio import OpenStdio
from cocoon.ttrpc.status import StatusCode

CREATED = types.CREATED
RUNNING = types.RUNNING
STOPPED = types.STOPPED
PAUSED = types.PAUSED


@dataclass(eq=False)
class ShimProcess:
    container_id: str
    exec_id: str  # "" for the container's init process
    stdio: OpenStdio
    status: types.Status = CREATED
    exit_status: int = 0
    exited_at: float | None = None
    relay: asyncio.Task[None] | None = None
    stdin: StdinPump | None = None
    process_proto: kata_oci_pb2.Process | None = None  # an exec's Process, sent at Start
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return f"{self.container_id}/{self.exec_id}" if self.exec_id else self.container_id

    @property
    def event_id(self) -> str:
        """The process id in task events: the exec id, or the container id for init."""
        return self.exec_id or self.container_id

    def record_exit(self, status: int) -> None:
        self.status = STOPPED
        self.exit_status = status
        self.exited_at = time.time()

    def require_live(self, action: str) -> None:
        if self.status == STOPPED:
            raise RPCError(StatusCode.NOT_FOUND,
                           f"cannot {action} {self.name}: process already finished")

    def require(self, allowed: tuple[types.Status, ...], action: str) -> None:
        if self.status not in allowed:
            state = types.Status.Name(self.status).lower()
            raise RPCError(StatusCode.FAILED_PRECONDITION,
                           f"cannot {action} {self.name}: it is {state}")


@dataclass(eq=False)
class ShimContainer:
    id: str
    bundle: Path
    pod: PodRef
    init: ShimProcess
    rootfs: Path | None = None  # <bundle>/rootfs when the shim mounted it
    cgroup: HostCgroup | None = None  # its host cgroup (the pod's VM is in its first container's)
    execs: dict[str, ShimProcess] = field(default_factory=dict)
    # created from a checkpoint: its directory and the guest spec, restored at Start
    restore: tuple[Path, kata_oci_pb2.Spec] | None = None

    def process(self, exec_id: str) -> ShimProcess:
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise RPCError(StatusCode.NOT_FOUND,
                           f"process {exec_id} of container {self.id} does not exist") from None

    def processes(self) -> list[ShimProcess]:
        return [self.init, *self.execs.values()]
