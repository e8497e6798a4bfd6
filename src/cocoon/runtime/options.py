"""What `create` is asked for beside the container's id (kept apart from `runtime.create` so
that verbs which only name the options do not import the VM machinery)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CheckpointOptions:
    """runc's checkpoint and restore flags that mean something here."""

    image_path: Path
    work_path: Path | None = None
    leave_running: bool = False  # checkpoint only
    tcp_established: bool = False
    file_locks: bool = False


@dataclass(frozen=True)
class CreateOptions:
    bundle: Path
    pid_file: Path | None = None
    console_socket: str | None = None
    foreground: bool = False  # `run` without --detach: the caller relays, no shim is forked
    systemd_cgroup: bool = False  # cgroupsPath is slice:prefix:name (--systemd-cgroup)
    restore: CheckpointOptions | None = None  # `restore`: the processes come from a checkpoint
