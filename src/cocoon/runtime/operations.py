"""The OCI operations on containers: `Runtime`, the one facade every CLI verb that drives a VM
calls, with the lifecycle rules.

Each operation takes the container's lock, checks the status against the rule for it
(`cocoon.oci.state`), acts on the sandbox, and saves the new state before it releases the lock.
The work lives along the seams of a container's life: `runtime.create` (bundle, VM, share,
CreateContainer, shim, hooks; start), `runtime.foreground` (`run` and `exec` relayed by the CLI
itself), `runtime.teardown` (delete), and `runtime.control` (kill, pause, resume, update and the
agent's queries, which `cocoon kill` imports without this module). `exec` is put together here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import signal
from pathlib import Path
from typing import Any

from cocoon.errors import CocoonError, ConfigError, StateWriteError
from cocoon.oci import convert
from cocoon.oci.spec import Process
from cocoon.oci.state import (
    ContainerState,
    StateStore,
    Status,
    is_ours,
    process_start_time,
    require,
    validate_id,
)
from cocoon.protocols.gen import agent_pb2
from cocoon.runtime import control, hostcgroups
from cocoon.runtime.control import call_agent
from cocoon.runtime.options import CheckpointOptions, CreateOptions
from cocoon.sandbox.layout import Layout

__all__ = ["CheckpointOptions", "CreateOptions", "Runtime"]


class Runtime:
    """The containers under one state root."""

    def __init__(self, root: Path, debug: bool = False, systemd_cgroup: bool = False) -> None:
        self.root = root
        self.store = StateStore(root)
        self.debug = debug
        self.systemd_cgroup = systemd_cgroup  # --systemd-cgroup: cgroupsPath is slice:prefix:name

    def _options(self, options: CreateOptions) -> CreateOptions:
        if self.systemd_cgroup and not options.systemd_cgroup:
            return dataclasses.replace(options, systemd_cgroup=True)
        return options

    def layout(self, state: ContainerState) -> Layout:
        return Layout(Path(state.vm_dir))

    def load(self, container_id: str) -> ContainerState:
        return self.store.load(validate_id(container_id))

    def state(self, container_id: str) -> dict[str, Any]:
        return self.load(container_id).oci_state()

    def containers(self) -> list[ContainerState]:
        return self.store.load_all()

    # --- lifecycle -------------------------------------------------------------------------------

    def create(self, container_id: str, options: CreateOptions) -> ContainerState:
        from cocoon.runtime import create

        return create.create(self.store, container_id, self._options(options), debug=self.debug)

    def start(self, container_id: str) -> ContainerState:
        from cocoon.runtime import create

        return create.start(self.store, container_id)

    def run_foreground(self, container_id: str, options: CreateOptions) -> int:
        """`cocoon run` without --detach: create, start, relay stdio here, delete."""
        from cocoon.runtime import foreground

        return foreground.run(self.store, container_id, self._options(options), debug=self.debug)

    def checkpoint(self, container_id: str, options: CheckpointOptions) -> None:
        from cocoon.runtime import checkpoint

        checkpoint.checkpoint(self.store, container_id, options)

    def restore(self, container_id: str, options: CreateOptions) -> ContainerState:
        """`create` whose processes come from `options.restore`'s images, running at once."""
        from cocoon.runtime import checkpoint, create

        assert options.restore is not None
        checkpoint.check_images(options.restore)
        return create.create(self.store, container_id, self._options(options), debug=self.debug)

    def delete(self, container_id: str, force: bool = False, exited: bool = False) -> None:
        """Remove the container and its VM. `exited`: its processes are known to have ended
        (a foreground `run` relayed the exit), so nothing is signalled first."""
        from cocoon.runtime import teardown

        teardown.delete(self.store, container_id, force=force, exited=exited)

    # --- kill, pause, resume, update -------------------------------------------------------------

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        control.kill(self.store, container_id, sig, all_processes)

    def pause(self, container_id: str) -> None:
        control.pause(self.store, container_id)

    def resume(self, container_id: str) -> None:
        control.resume(self.store, container_id)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        control.update(self.store, container_id, resources)

    # --- queries ---------------------------------------------------------------------------------

    def processes(self, container_id: str) -> list[int]:
        """Host pids of the container's processes, as runc reports them: its shims' pids."""
        state = self.load(container_id)
        status = state.current_status()
        require(status, status in (Status.RUNNING, Status.PAUSED, Status.CREATED), state.id,
                "list the processes of")
        pids = [state.pid] if state.pid_alive() else []
        for exec_id, pid in state.execs.items():
            if is_ours(pid, state.exec_starts.get(exec_id, 0)):
                pids.append(pid)
        return pids

    def guest_processes(self, container_id: str) -> str:
        return control.guest_processes(self.store, container_id)

    def stats(self, container_id: str) -> agent_pb2.StatsContainerResponse:
        return control.stats(self.store, container_id)

    # --- exec ------------------------------------------------------------------------------------

    def exec_process(self, container_id: str, process: Process, *, detach: bool,
                     pid_file: Path | None, console_socket: str | None) -> int:
        """Start `process` in the container; detached: return the shim's pid, else its status."""
        state = self.load(container_id)
        status = state.current_status()
        require(status, status.can_exec(), state.id, "exec in")
        if process.terminal and detach and not console_socket:
            raise ConfigError("--tty with --detach needs a --console-socket")
        exec_id = "exec-" + secrets.token_hex(6)
        proto = convert.process_to_proto(process)
        asyncio.run(call_agent(state, lambda agent: agent.exec_process(state.id, exec_id, proto)))
        if not detach:
            from cocoon.runtime import foreground

            return foreground.relay_exec(state, exec_id, process.terminal)
        from cocoon.runtime import create

        spec = self.store.config(state.id)
        try:
            pid = create.spawn_shim(self.layout(state), state.id, state.rootfs, exec_id,
                                    create.netns_of(spec),
                                    console_socket if process.terminal else None)
        except BaseException:
            # its shim never attached: nothing would end the process, nothing could reach it
            self._kill_exec(state, exec_id)
            raise
        start = process_start_time(pid) or 0  # our unreaped child: it has one
        cgroup = hostcgroups.of(state)
        if cgroup is not None:
            cgroup.enter([pid])  # as runc's exec joins the container's cgroup
        try:
            with self.store.lock(state.id):
                fresh = self.store.load(state.id)
                fresh.execs[exec_id] = pid
                fresh.exec_starts[exec_id] = start
                self.store.save(fresh)
        except StateWriteError:
            from cocoon.runtime import teardown

            # unrecorded, neither may stay: the process (perhaps before its shim attached) and
            # its shim
            self._kill_exec(state, exec_id)
            teardown.kill_quietly(pid, start)
            raise
        if pid_file is not None:
            create.write_pid_file(pid_file, pid)
        return pid

    @staticmethod
    def _kill_exec(state: ContainerState, exec_id: str) -> None:
        with contextlib.suppress(CocoonError, OSError):
            asyncio.run(call_agent(state, lambda agent: agent.signal_process(
                state.id, exec_id, signal.SIGKILL)))
