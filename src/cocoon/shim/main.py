"""`containerd-shim-cocoon-v2`: the binary containerd runs for runtime `io.containerd.cocoon.v2`.

    start   find the pod's running shim or start one; print its ttrpc address and exit
    delete  clean up after a shim that died; print a DeleteResponse (protobuf) and exit
    -v      print the version

containerd reads everything `start` prints (stdout and stderr together) as the address, so
`start` prints nothing else; failures go to stderr with a non-zero exit, which containerd shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from cocoon import __version__
from cocoon.errors import CocoonError, RPCError
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.shim import address as addr
from cocoon.shim import mounts, options
from cocoon.shim.events import timestamp
from cocoon.shim.flags import ShimFlags, parse_flags
from cocoon.shim.pod import saved_cgroup, stop_pod_vm
from cocoon.ttrpc.client import Client
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.shim.main")

NAME = "containerd-shim-cocoon-v2"
DEAD_SHIM_STATUS = 137  # 128 + SIGKILL, as containerd's own shims report a lost task
TASK = "containerd.task.v2.Task"


def answers(path: Path) -> bool:
    """Whether a shim listens on `path` (a socket left by a dead one refuses the connection)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextlib.contextmanager
def _socket_dir_lock() -> Iterator[int]:
    """Serialise `start`s: two containers of one pod must not both start a shim."""
    addr.socket_dir().mkdir(parents=True, exist_ok=True, mode=0o711)
    fd = os.open(addr.socket_dir(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _bind(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a dead shim (answers() said nobody listens)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def _spawn_daemon(flags: ShimFlags, sock: socket.socket, path: Path, pod_id: str,
                  bundle: Path) -> int:
    fd = sock.fileno()
    command = [sys.executable, "-m", "cocoon.shim.daemon", "--fd", str(fd), "--socket", str(path),
               "--namespace", flags.namespace, "--address", flags.address, "--pod", pod_id]
    if flags.debug:
        command.append("--debug")
    proc = subprocess.Popen(command, cwd=bundle, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(fd,), start_new_session=True, close_fds=True)
    proc.returncode = 0  # it outlives us; whoever adopts it reaps it
    return proc.pid


def start(flags: ShimFlags, bundle: Path) -> str:
    ref = addr.pod_of(flags.id, addr.bundle_annotations(bundle))
    path = addr.socket_path(flags.address, flags.namespace, ref.pod_id)
    url = addr.socket_url(path)
    with _socket_dir_lock():
        if not answers(path):
            sock = _bind(path)
            try:
                _spawn_daemon(flags, sock, path, ref.pod_id, bundle)
            except OSError:
                path.unlink(missing_ok=True)
                raise
            finally:
                sock.close()
    addr.write_address(bundle, url)
    return url


async def _delete_in_live_shim(path: Path, container_id: str) -> bool:
    """Ask the running shim to forget the container; True when it no longer holds it."""
    client = await Client.connect_unix(path, timeout=5.0)
    try:
        await client.call(TASK, "Delete", api.DeleteRequest(id=container_id),
                          api.DeleteResponse, timeout=30.0)
        return True
    except RPCError as err:
        return err.code == StatusCode.NOT_FOUND
    finally:
        await client.close()


def delete(flags: ShimFlags, bundle: Path) -> api.DeleteResponse:
    """Clean up after a shim that containerd lost: its VM, its socket, this rootfs mount."""
    try:
        annotations = addr.bundle_annotations(bundle)
    except CocoonError:
        annotations = {}  # the bundle is half gone: the container's own id is all we have
    ref = addr.pod_of(flags.id, annotations)
    path = addr.socket_path(flags.address, flags.namespace, ref.pod_id)
    released = True
    if answers(path):
        # the pod's shim still runs (containerd lost only this container): it owns the VM
        try:
            released = asyncio.run(_delete_in_live_shim(path, flags.id))
        except CocoonError:
            released = False
    else:
        asyncio.run(stop_pod_vm(addr.vm_dir(flags.address, flags.namespace, ref.pod_id)))
        path.unlink(missing_ok=True)
        cgroup = saved_cgroup(bundle)
        if cgroup is not None:
            cgroup.remove()
    if released:
        mounts.unmount_rootfs(bundle / "rootfs")
    return api.DeleteResponse(pid=0, exit_status=DEAD_SHIM_STATUS, exited_at=timestamp())


def version_text() -> str:
    return f"{NAME}:\n  Version:  {__version__}\n  Runtime:  io.containerd.cocoon.v2\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        flags = parse_flags(args)
        if flags.version:
            sys.stdout.write(version_text())
            return 0
        if not flags.namespace:
            raise CocoonError("shim namespace cannot be empty (-namespace)")
        if not flags.id:
            raise CocoonError("shim id cannot be empty (-id)")
        bundle = Path(flags.bundle or os.getcwd()).absolute()
        if flags.action == "start":
            config_path = options.config_path(options.read_stdin())  # the RuntimeClass's file
            if config_path is not None:
                options.adopt(config_path, bundle)
            sys.stdout.write(start(flags, bundle))
            return 0
        if flags.action == "delete":
            options.readopt(bundle)
            sys.stdout.buffer.write(delete(flags, bundle).SerializeToString())
            return 0
        raise CocoonError(f"unknown action {flags.action!r}: expected start or delete"
                          if flags.action else "no action given: expected start or delete")
    except (CocoonError, OSError) as err:
        sys.stderr.write(f"{NAME}: {err}\n")
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
