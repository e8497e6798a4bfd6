"""Taking a container down: `delete` and the quiet stops a failed `create` undoes with.

`delete` kills what still runs in the container (unless its processes are known to have ended),
asks the sandbox monitor to shut the VM down (or cleans up by force when it does not answer),
kills the per-process shims left behind, removes the state, and runs the poststop hooks. Every
step is safe on a container that is half gone: a crashed monitor, a dead VM, shims that exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from cocoon.errors import CocoonError, ContainerStateError
from cocoon.oci.state import ContainerState, StateStore, Status, is_ours, validate_id
from cocoon.runtime import hooks, hostcgroups, sharing
from cocoon.runtime.control import call_agent
from cocoon.sandbox.launcher import stop_sandbox_async
from cocoon.sandbox.layout import Layout, vm_dir_for
from cocoon.sandbox.share import Share

KILL_TIMEOUT = 5.0   # for the agent's SIGKILL of every process of the container
DEAD_WAIT = 3.0      # for the shims to see their processes end before they are killed
STOP_GRACE = 1.0     # for the guest to stop after DestroySandbox


def delete(store: StateStore, container_id: str, force: bool = False,
           exited: bool = False) -> None:
    """Remove the container and its VM. `exited`: its processes are known to have ended
    (a foreground `run` relayed the exit), so nothing is signalled first."""
    if force and store.half_made(validate_id(container_id)):
        # under the id's lock: a create that is still running holds it, and is no half-made
        # id once it lets go (its state written, or the id given back)
        with store.lock(container_id):
            if store.half_made(container_id):
                _remove_half_made(store, container_id)
                return
    state = store.load(container_id)
    with store.lock(state.id):
        state = store.load(state.id)
        status = state.current_status()
        if not status.can_delete(force):
            raise ContainerStateError(
                f"cannot delete container {state.id}: it is {status} (use --force)",
                id=state.id, status=str(status))
        spec = None
        with contextlib.suppress(CocoonError, OSError):
            spec = store.config(state.id)
        asyncio.run(_teardown(store, state, exited))
        store.remove(state.id)
    if spec is not None and spec.hooks is not None:
        with contextlib.suppress(CocoonError, OSError):
            hooks.run_hooks("poststop", spec.hooks.poststop, state.oci_state(), fatal=False)


def _remove_half_made(store: StateStore, container_id: str) -> None:
    """An id whose create died before its first state was written: nothing of it can run
    but a sandbox in its directory (stopped, if there is one), and its state directory."""
    layout = Layout(vm_dir_for(str(store.root), container_id))
    if layout.root.exists():
        stop_quietly(layout)
    store.remove(container_id)


async def _teardown(store: StateStore, state: ContainerState, exited: bool = False) -> None:
    layout = Layout(Path(state.vm_dir))
    # only the shims that are still the processes recorded: a pid a dead shim left may be
    # anyone's by now
    shims = [(pid, start) for pid, start in state.shims() if pid != os.getpid()
             and is_ours(pid, start)]
    # read now, while the shims live: once the guest process is killed below they exit
    namespaces = {ns for ns in (mount_namespace(pid) for pid, _ in shims) if ns}
    if layout.monitor_socket.exists() and not exited \
            and state.current_status() is not Status.STOPPED:
        with contextlib.suppress(CocoonError, OSError):
            await call_agent(state, lambda agent: agent.signal_process(
                state.id, "", signal.SIGKILL, all=True, timeout=KILL_TIMEOUT))
        await wait_dead(shims, timeout=DEAD_WAIT)
    with sharing.locked(layout):
        others = sharing.others(layout, state.id, store)
        if others:
            # other containers (of a pod) run in this VM: only this one goes
            hostcgroups.hand_over(store, state, layout, others)
            with contextlib.suppress(CocoonError, OSError):
                await call_agent(state, lambda agent: agent.remove_container(state.id))
            Share(layout.shared).remove_container(state.id)
            sharing.remove(layout, state.id)
        else:
            await stop_sandbox_async(layout, grace=STOP_GRACE)
    namespaces.discard(mount_namespace(os.getpid()))  # a shim that could not make its own
    for pid, start in shims:
        kill_quietly(pid, start)
    # a shim's mount namespace (a copy of the host's, taken at its start) holds the engine's
    # mounts of that moment, such as podman's /dev/shm tmpfs: the engine unmounts and removes
    # them once delete returns, so delete returns once no process is left in one
    await namespaces_gone(namespaces, timeout=DEAD_WAIT)
    hostcgroups.remove(state)


async def stop(store: StateStore, state: ContainerState) -> None:
    """What `delete` does to a container whose processes have ended, but its state: the VM
    stopped, the shims gone, the host cgroup removed (a checkpoint leaves it so)."""
    await _teardown(store, state, exited=True)


def mount_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


async def namespaces_gone(namespaces: set[int], timeout: float) -> None:
    """Wait until no live process is in any of the mount namespaces (inode numbers)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while namespaces and loop.time() < deadline:
        if not any(mount_namespace(int(entry)) in namespaces
                   for entry in os.listdir("/proc") if entry.isdigit()):
            return
        await asyncio.sleep(0.02)


def stop_quietly(layout: Layout) -> None:
    """Stop the sandbox in `layout` (a failed create's, or one left under the same id)."""
    asyncio.run(stop_sandbox_async(layout, grace=0.5))


async def wait_dead(shims: Sequence[tuple[int, int]], timeout: float) -> None:
    """Wait until none of `shims` (pid, start time) is still that process, or `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not any(is_ours(pid, start) for pid, start in shims):
            return
        await asyncio.sleep(0.02)


def kill_quietly(pid: int, start: int) -> None:
    """SIGKILL a shim if it is still the process that started at `start` (checked through a
    pidfd, so the pid cannot change hands between the check and the signal), and reap it if it
    is our child; nothing when it is gone, is someone else now, or is us."""
    if not pid or pid == os.getpid():
        return
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if not is_ours(pid, start):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
