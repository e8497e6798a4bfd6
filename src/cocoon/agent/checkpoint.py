"""Checkpoint and restore of a container's process tree with CRIU, inside the guest.

QEMU 7.2 cannot migrate a VM with a virtio-fs device, so a sandbox is not saved whole: CRIU
dumps the container's processes (as runc does on a host) into a directory the host bound into
the share, and restores them from there into a new container of another guest (docs/design.md,
"Checkpoint and restore"). The container's stdio pipes are recorded at dump time
(`descriptors.json`, as runc does) and replaced at restore by new pipes to this agent
(`--inherit-fd`), so the new host shim reads the restored process's output. A terminal is
refused: its pty lives in the container's devpts and has no stand-in here.

CRIU runs as a child of the agent, outside the container's namespaces; the restored tree's
root becomes the agent's child (`--restore-sibling`), reaped and waited on like any init.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from cocoon.agent import hostpaths
from cocoon.agent.cgroups import Cgroup
from cocoon.agent.container import (
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    Container,
    ContainerConfig,
    ContainerError,
    Status,
    _fork,
    _Streams,
)
from cocoon.agent.process import Reaper
from cocoon.agent.rootfs import Mount, reach_sources
from cocoon.linux.paths import make_in_root
from cocoon.protocols.gen import guest_pb2

CRIU = "/usr/sbin/criu"
DESCRIPTORS = "descriptors.json"
DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
PIDFILE = "restore.pid"
ERROR_LINES = 3


def _image_dirs(options: guest_pb2.CriuOptions) -> tuple[str, str]:
    """The image and work directories, held to what the host may name (its share)."""
    try:
        images = hostpaths.in_area(options.image_dir, "checkpoint image directory")
        work = hostpaths.in_area(options.work_dir or images, "checkpoint work directory")
    except hostpaths.PathRefused as err:
        raise ContainerError(INVALID_ARGUMENT, str(err)) from None
    for path in (images, work):
        if not os.path.isdir(path):
            raise ContainerError(INVALID_ARGUMENT, f"checkpoint directory {path} does not exist "
                                                   "in the guest")
    return images, work


def _is_bind(mount: Mount) -> bool:
    return mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options


def _binds(mounts: Iterable[Mount]) -> list[Mount]:
    return [m for m in mounts if _is_bind(m)]


def common_args(options: guest_pb2.CriuOptions, work: str, log: str) -> list[str]:
    args = ["-W", work, "-o", log, "-v4", "--manage-cgroups=ignore"]
    if options.tcp_established:
        args.append("--tcp-established")
    if options.file_locks:
        args.append("--file-locks")
    return args


def dump_args(pid: int, mounts: Iterable[Mount], options: guest_pb2.CriuOptions,
              images: str, work: str, leave_running: bool, frozen: str | None = None
              ) -> list[str]:
    """`criu dump` of the tree rooted at `pid`; each volume is an external mount named by its
    destination, so that restore can give it the new guest's source. A paused container's
    cgroup (`frozen`) is CRIU's freezer: ptrace cannot stop a task the cgroup holds frozen."""
    args = [CRIU, "dump", "-t", str(pid), "-D", images, *common_args(options, work, DUMP_LOG)]
    if frozen is not None:
        args += ["--freeze-cgroup", frozen]
    for mount in _binds(mounts):
        args += ["--ext-mount-map", f"{mount.destination}:{mount.destination}"]
    if leave_running:
        args.append("--leave-running")
    return args


def restore_args(rootfs: str, mounts: Iterable[Mount], options: guest_pb2.CriuOptions,
                 images: str, work: str, inherit: Iterable[tuple[int, str]]) -> list[str]:
    args = [CRIU, "restore", "-D", images, *common_args(options, work, RESTORE_LOG),
            "--root", rootfs, "--restore-detached", "--restore-sibling",
            "--pidfile", os.path.join(work, PIDFILE)]
    for mount in _binds(mounts):
        args += ["--ext-mount-map", f"{mount.destination}:{mount.source}"]
    for fd, name in inherit:
        args += ["--inherit-fd", f"fd[{fd}]:{name}"]
    return args


def top_mount_points(mounts: Iterable[Mount]) -> list[Mount]:
    """The mounts whose mount point lies in the rootfs itself, not in another mount of the
    container (what is in a tmpfs or in /proc, CRIU restores with its parent)."""
    destinations = [m.destination.rstrip("/") for m in mounts]
    return [m for m in mounts
            if not any(m.destination.startswith(d + "/") for d in destinations if d)]


def make_mount_points(rootfs: str, mounts: Iterable[Mount]) -> None:
    """CRIU mounts into the points it finds; a rootfs that is not the dumped one (containerd
    restores into a fresh snapshot of the image) may lack those `create` made, so they are
    made here, inside the rootfs, as `create` makes them."""
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for mount in top_mount_points(mounts):
            as_file = _is_bind(mount) and os.path.isfile(mount.source)
            try:
                os.close(make_in_root(root_fd, mount.destination, as_file=as_file))
            except OSError as err:
                raise ContainerError(FAILED_PRECONDITION, f"cannot make mount point "
                                     f"{mount.destination} in the rootfs: "
                                     f"{err.strerror or err}") from None
    finally:
        os.close(root_fd)


def stdio_descriptors(pid: int) -> list[str]:
    """What fds 0, 1 and 2 of `pid` are (`pipe:[123]`, `/dev/null`, ...), as runc records."""
    found = []
    for fd in range(3):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            found.append("")
    return found


def criu_error(log: Path) -> str:
    """The last few `Error` lines of a CRIU log, on one line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line.strip() for line in lines if "Error" in line or "error" in line]
    return " | ".join(errors[-ERROR_LINES:]) or (lines[-1].strip() if lines else "empty log")


async def _run_criu(args: list[str], reaper: Reaper, *, pass_fds: Iterable[int] = (),
                    cgroup_procs: str | None = None) -> int:
    """Run CRIU as the agent's child (the reaper collects every child of PID 1); its status."""
    keep = list(pass_fds)

    def body() -> NoReturn:
        if cgroup_procs is not None:  # what CRIU restores starts in the container's cgroup
            with open(cgroup_procs, "w") as f:
                f.write("0")
        for fd in keep:
            os.set_inheritable(fd, True)
        null = os.open("/dev/null", os.O_RDWR)
        for target in (0, 1, 2):
            if target not in keep:
                os.dup2(null, target)
        os.execv(args[0], args)

    pid = _fork(body)
    return await reaper.wait_pid(pid)


async def checkpoint(container: Container, options: guest_pb2.CriuOptions,
                     leave_running: bool, reaper: Reaper) -> None:
    """Dump the container's processes into the image directory; unless `leave_running`, CRIU
    kills them once dumped (the container is then stopped, as after runc checkpoint)."""
    if container.status not in (Status.RUNNING, Status.PAUSED):
        raise ContainerError(FAILED_PRECONDITION, f"container {container.id} is "
                             f"{container.status.value}, not running")
    if container.init is None or not container.init.pid:
        raise ContainerError(FAILED_PRECONDITION, f"container {container.id} has no process")
    if container.init.terminal:
        raise ContainerError(FAILED_PRECONDITION, f"container {container.id} has a terminal: "
                             "checkpoint of a terminal is not supported")
    images, work = _image_dirs(options)
    pid = container.init.pid
    descriptors = stdio_descriptors(pid)
    with open(os.path.join(images, DESCRIPTORS), "w") as f:
        json.dump(descriptors, f)
    mounts = container.config.init.rootfs.mounts
    frozen = str(container.cgroup.path) if container.paused and container.cgroup else None
    code = await _run_criu(dump_args(pid, mounts, options, images, work, leave_running, frozen),
                           reaper)
    if code != 0:
        raise ContainerError(INTERNAL, f"criu dump of container {container.id} failed "
                             f"(exit {code}): {criu_error(Path(work) / DUMP_LOG)}")


def inherited(descriptors: list[str], child_fds: list[int]) -> list[tuple[int, str]]:
    """(our fd, the pipe it stands for) for each stdio pipe of the dumped init; a pipe named
    twice (`2>&1`) takes the first fd that named it."""
    pairs: dict[str, int] = {}
    for name, fd in zip(descriptors, child_fds, strict=False):
        if name.startswith("pipe:") and name not in pairs:
            pairs[name] = fd
    return [(fd, name) for name, fd in pairs.items()]


async def restore(container_id: str, config: ContainerConfig, options: guest_pb2.CriuOptions,
                  reaper: Reaper) -> Container:
    """A new running container whose processes are the dumped ones."""
    images, work = _image_dirs(options)
    try:
        with open(os.path.join(images, DESCRIPTORS)) as f:
            descriptors = [str(d) for d in json.load(f)]
    except (OSError, ValueError) as err:
        raise ContainerError(INVALID_ARGUMENT, f"checkpoint image {images} has no readable "
                             f"{DESCRIPTORS}: {err}") from None
    if any(d.startswith("/dev/pts/") for d in descriptors):
        raise ContainerError(FAILED_PRECONDITION, "the checkpoint's process has a terminal: "
                             "restore of a terminal is not supported")
    cgroup = Cgroup.create(container_id)
    try:
        cgroup.apply(config.resources)
    except (OSError, ValueError) as err:
        await cgroup.remove()
        raise ContainerError(INVALID_ARGUMENT, f"linux.resources: {err}") from err
    container = Container(container_id, config, cgroup, reaper)
    plan = config.init.rootfs
    streams = _Streams(terminal=False)
    try:
        reach_sources(plan.rootfs, plan.mounts)
        make_mount_points(plan.rootfs, plan.mounts)
        args = restore_args(plan.rootfs, plan.mounts, options, images, work,
                            inherited(descriptors, streams.child_fds))
        pidfile = Path(work) / PIDFILE
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        code = await _run_criu(args, reaper, pass_fds=streams.child_fds,
                               cgroup_procs=str(cgroup.path / "cgroup.procs"))
        streams.close_child_ends()
        if code != 0:
            raise ContainerError(INTERNAL, f"criu restore of container {container_id} failed "
                                 f"(exit {code}): {criu_error(Path(work) / RESTORE_LOG)}")
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError) as err:
            raise ContainerError(INTERNAL, f"criu restored container {container_id} but "
                                 f"wrote no pid: {err}") from None
        process = streams.process(container_id, "")
        container.init = process
        reaper.register(pid, process)
        container.started = True
    except BaseException:
        streams.close_all()
        await container.destroy()
        raise
    return container
