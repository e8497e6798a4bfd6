"""Container state on disk: one directory per container under the state root, one JSON file.

Every transition is saved atomically (temp file, fsync, rename) while the container's lock is
held, so concurrent invocations on one container see either the old or the new state. The
status rules (which operation is legal in which status) live here, next to the state they judge,
as youki keeps them: `can_start()`, `can_kill()`, ...
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import errno
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cocoon.oci.spec import Spec

from cocoon.errors import (
    CocoonError,
    ConfigError,
    ContainerExistsError,
    ContainerNotFoundError,
    ContainerStateError,
    StateWriteError,
)

OCI_VERSION = "1.1.0"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"  # the configuration as create read it
LOCK_FILE = ".lock"
# written at create, given up when a later state would not fit: a container whose VM runs can
# always record that it started or stopped, even when something else filled the state root
RESERVE_FILE = ".reserve"
RESERVE_BYTES = 16 << 10
MAX_ID_LENGTH = 255  # a container's directory is named by its id: NAME_MAX
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Status(enum.StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def can_start(self) -> bool:
        return self is Status.CREATED

    def can_kill(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING, Status.PAUSED)

    def can_delete(self, force: bool = False) -> bool:
        return force or self in (Status.STOPPED, Status.CREATING)

    def can_pause(self) -> bool:
        return self is Status.RUNNING

    def can_resume(self) -> bool:
        return self is Status.PAUSED

    def can_exec(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING)

    def can_update(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING, Status.PAUSED)


def validate_id(container_id: str) -> str:
    if len(container_id) > MAX_ID_LENGTH:
        raise ConfigError(f"invalid container id {container_id[:20]}... ({len(container_id)} "
                          f"characters): at most {MAX_ID_LENGTH}, the longest name of its "
                          "state directory", id=container_id[:MAX_ID_LENGTH])
    if not _ID_RE.fullmatch(container_id) or container_id in (".", ".."):
        raise ConfigError(f"invalid container id {container_id!r}: use letters, digits, "
                          "'_', '.', '+' and '-'", id=container_id)
    return container_id


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_ours(pid: int, start: int) -> bool:
    """Whether `pid` is still the process that had start time `start` when it was recorded:
    a pid whose start time was not recorded proves nothing, and is never ours to signal."""
    return bool(pid) and bool(start) and process_start_time(pid) == start


@dataclass
class ContainerState:
    id: str
    bundle: str
    rootfs: str
    status: Status = Status.CREATING
    pid: int = 0              # the host stand-in of the container's init (per-process shim)
    pid_start: int = 0        # its start time, against pid reuse
    created: str = ""
    owner: str = "root"
    annotations: dict[str, str] = field(default_factory=dict)
    vm_dir: str = ""          # the sandbox directory (monitor socket, console log, share)
    monitor_pid: int = 0
    exit_status: int | None = None
    boot_id: str = ""
    kernel_release: str = ""
    execs: dict[str, int] = field(default_factory=dict)  # exec id -> its shim's pid
    exec_starts: dict[str, int] = field(default_factory=dict)  # exec id -> that shim's start
    host_cgroup: dict[str, Any] | None = None  # cocoon.hostcgroup.HostCgroup.to_json()

    def pid_alive(self) -> bool:
        if not self.pid:
            return False
        start = process_start_time(self.pid)
        return start is not None and (not self.pid_start or start == self.pid_start)

    def shims(self) -> list[tuple[int, int]]:
        """(pid, start time) of the init's stand-in and of every exec shim, as recorded."""
        return [(self.pid, self.pid_start),
                *((pid, self.exec_starts.get(eid, 0)) for eid, pid in self.execs.items())]

    def current_status(self) -> Status:
        """The stored status corrected by what is true now: a dead init means stopped."""
        if self.status in (Status.CREATED, Status.RUNNING, Status.PAUSED) and not self.pid_alive():
            return Status.STOPPED
        return self.status

    def oci_state(self) -> dict[str, Any]:
        """The runtime-spec state JSON (with runc's extra fields)."""
        status = self.current_status()
        state: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": str(status),
            "pid": self.pid if status in (Status.CREATED, Status.RUNNING, Status.PAUSED) else 0,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            state["annotations"] = dict(self.annotations)
        return state

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerState:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = Status(values.get("status", "creating"))
        return cls(**values)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class StateStore:
    """The containers under one state root (`--root`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dir(self, container_id: str) -> Path:
        return self.root / validate_id(container_id)

    def exists(self, container_id: str) -> bool:
        return (self.dir(container_id) / STATE_FILE).exists()

    def half_made(self, container_id: str) -> bool:
        """The id's directory is there without a state file: a create that died before its
        first state was written (only `delete --force` removes it)."""
        directory = self.dir(container_id)
        return directory.is_dir() and not (directory / STATE_FILE).exists()

    def _write_error(self, container_id: str, what: str, err: OSError) -> StateWriteError:
        return StateWriteError(f"container {container_id}: cannot write its {what} under "
                               f"{self.root}: {err.strerror or err}", id=container_id,
                               errno=err.errno, root=str(self.root))

    @contextlib.contextmanager
    def lock(self, container_id: str) -> Iterator[None]:
        """Hold the container's lock (a flock on a file in its directory).

        The lock is proven to be the directory's once held: a waiter whose directory was
        removed meanwhile (a `delete`, or a `create` that failed and gave the id back) holds
        a lock on a file nobody else will ever see, perhaps beside a new directory of the
        same id, and is told the container does not exist instead of going on."""
        path = self.dir(container_id) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise ContainerNotFoundError(f"container {container_id} does not exist",
                                         id=container_id) from None
        except OSError as err:
            raise self._write_error(container_id, "lock file", err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_dev, current.st_ino) != (held.st_dev,
                                                                        held.st_ino):
                raise ContainerNotFoundError(f"container {container_id} does not exist (it "
                                             "was removed meanwhile)", id=container_id)
            yield
        finally:
            os.close(fd)

    def create(self, state: ContainerState) -> None:
        """Claim the id and write its first state (see `creating`)."""
        with self.creating(state):
            pass

    @contextlib.contextmanager
    def creating(self, state: ContainerState) -> Iterator[None]:
        """Claim the id (atomically: mkdir), take its lock, and write the first state (and the
        reserve) under it; hold the lock while the block runs. If they cannot be written, the
        id is given back. Another command on the id waits for the block, so it never sees a
        create half way; one that finds the directory without a state found a create that
        died before its first state was written (half made)."""
        directory = self.dir(state.id)
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
            directory.mkdir(mode=0o700)
        except FileExistsError:
            half = " but was never completely created: `delete --force` removes it" \
                if self.half_made(state.id) else ""
            raise ContainerExistsError(f"container {state.id} already exists{half}",
                                       id=state.id) from None
        except OSError as err:
            raise self._write_error(state.id, "directory", err) from err
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.lock(state.id))
            except ContainerNotFoundError:
                # removed between the mkdir and the lock (a `delete --force` of a half-made id)
                raise ContainerStateError(f"container {state.id} was removed while it was "
                                          "being created", id=state.id) from None
            try:
                self.save(state)
                self._write(state.id, RESERVE_FILE, bytes(RESERVE_BYTES), rename=True)
            except BaseException:
                self.remove(state.id)
                raise
            yield

    def create_running(self, container_id: str) -> bool:
        """Whether a command holds the id's lock (a `create` holds it from its first state to
        its last): a state still `creating` that nobody holds is a create that died."""
        try:
            fd = os.open(self.dir(container_id) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    def load(self, container_id: str) -> ContainerState:
        """The container's state; one whose create died part way (killed) is `stopped`:
        nothing of it runs for anyone, and `delete` removes what is left."""
        state = self._load(container_id)
        if state.status is Status.CREATING and not self.create_running(container_id):
            state.status = Status.STOPPED
        return state

    def _load(self, container_id: str) -> ContainerState:
        path = self.dir(container_id) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            if self.half_made(container_id):
                raise ContainerStateError(
                    f"container {container_id} was never completely created (no state file): "
                    "`delete --force` removes it", id=container_id) from None
            raise ContainerNotFoundError(f"container {container_id} does not exist",
                                         id=container_id) from None
        except ValueError as err:
            raise ContainerStateError(f"container {container_id}: state file is corrupt: {err}",
                                      id=container_id) from err
        return ContainerState.from_json(data)

    def _write(self, container_id: str, name: str, data: bytes, rename: bool = False) -> Path:
        """Write `data` to a temporary file beside `name` (fsynced) and return it; when the
        root is full, give up the reserve and try once more. `rename`: rename it over `name`
        at once. StateWriteError names what could not be written."""
        directory = self.dir(container_id)
        tmp = directory / f".{name}.{os.getpid()}"
        for attempt in (1, 2):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if rename:
                    os.replace(tmp, directory / name)
                return tmp
            except OSError as err:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                if attempt == 1 and err.errno == errno.ENOSPC and name != RESERVE_FILE:
                    with contextlib.suppress(FileNotFoundError):
                        (directory / RESERVE_FILE).unlink()
                        continue
                what = {STATE_FILE: "state", CONFIG_FILE: "configuration"}.get(name, name)
                raise self._write_error(container_id, what, err) from err
        raise AssertionError("unreachable")

    def save(self, state: ContainerState) -> None:
        with self.staged(state):
            pass

    @contextlib.contextmanager
    def staged(self, state: ContainerState) -> Iterator[None]:
        """Write `state` first, make it the container's state only if the block succeeds: a
        transition whose new state cannot be written fails before it is made."""
        data = json.dumps(state.to_json(), indent=1).encode()
        tmp = self._write(state.id, STATE_FILE, data)
        try:
            yield
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.replace(tmp, self.dir(state.id) / STATE_FILE)

    def save_config(self, container_id: str, config: dict[str, Any]) -> None:
        """Keep the container's configuration as it was at create: runc reads config.json once,
        and a later edit of the bundle's file must change nothing."""
        tmp = self._write(container_id, CONFIG_FILE, json.dumps(config).encode())
        os.replace(tmp, self.dir(container_id) / CONFIG_FILE)

    def config(self, container_id: str) -> Spec:
        """The configuration kept at create."""
        from cocoon.oci.spec import load_spec

        path = self.dir(container_id) / CONFIG_FILE
        if not path.exists():
            raise ContainerStateError(f"container {container_id}: its configuration was not "
                                      "kept at create", id=container_id)
        return load_spec(path)

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.dir(container_id), ignore_errors=True)

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if (p / STATE_FILE).exists() and _ID_RE.fullmatch(p.name)
                      and len(p.name) <= MAX_ID_LENGTH)

    def load_all(self) -> builtins.list[ContainerState]:
        """Every container's state, skipping those removed or unreadable meanwhile."""
        states = []
        for container_id in self.list():
            with contextlib.suppress(CocoonError):
                states.append(self.load(container_id))
        return states


def require(status: Status, allowed: bool, container_id: str, action: str) -> None:
    if not allowed:
        raise ContainerStateError(f"cannot {action} container {container_id}: it is {status}",
                                  id=container_id, status=str(status))
