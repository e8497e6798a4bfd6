"""The OCI operations on containers: what every CLI verb asks for, with the lifecycle rules.

Each operation takes the container's lock, checks the status against the rule for it
(`cocoon.oci.state`), acts on the sandbox, and saves the new state before it releases the lock.
A `create` that fails part way undoes everything it did (an ExitStack released on success), so
a bad bundle or a VM that will not boot leaves no process, mount or directory behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon.errors import CocoonError, ConfigError, ContainerStateError, RPCError
from cocoon.oci import convert
from cocoon.oci.bundle import Bundle, load_bundle
from cocoon.oci.spec import Process, Spec
from cocoon.oci.state import (
    ContainerState,
    StateStore,
    Status,
    now_rfc3339,
    process_start_time,
    require,
    validate_id,
)
from cocoon.protocols.gen import agent_pb2
from cocoon.runtime import console, control, guestspec, hooks, shim, teardown
from cocoon.runtime.control import call_agent
from cocoon.runtime.sizing import vm_memory_mib
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.launcher import start_sandbox
from cocoon.sandbox.layout import Layout, SandboxConfig, vm_dir_for
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.sandbox.share import Share
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.runtime")


@dataclass(frozen=True)
class CreateOptions:
    bundle: Path
    pid_file: Path | None = None
    console_socket: str | None = None
    foreground: bool = False  # `run` without --detach: the caller relays, no shim is forked


def _netns(spec: Spec) -> str | None:
    if spec.linux is None:
        return None
    namespace = spec.linux.namespace("network")
    if namespace is None:
        return None
    return namespace.path or "new"


def _shim_log(layout: Layout) -> Path:
    """Where a shim logs: its sandbox directory, or $COCOON_SHIM_LOG (kept after teardown)."""
    return Path(os.environ.get("COCOON_SHIM_LOG") or layout.root / "shim.log")


def _write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(pid))
    os.replace(tmp, path)


class Runtime:
    """The containers under one state root."""

    def __init__(self, root: Path, debug: bool = False) -> None:
        self.root = root
        self.store = StateStore(root)
        self.debug = debug

    # --- helpers -----------------------------------------------------------------------------

    def layout(self, state: ContainerState) -> Layout:
        return Layout(Path(state.vm_dir))

    def load(self, container_id: str) -> ContainerState:
        return self.store.load(validate_id(container_id))

    def state(self, container_id: str) -> dict[str, Any]:
        return self.load(container_id).oci_state()

    def containers(self) -> list[ContainerState]:
        return self.store.load_all()

    # --- create ----------------------------------------------------------------------------

    def create(self, container_id: str, options: CreateOptions) -> ContainerState:
        validate_id(container_id)
        bundle = load_bundle(options.bundle)
        spec = bundle.spec
        if spec.process is None:
            raise ConfigError(f"{bundle.config_path}: process: a container needs a process")
        if spec.process.terminal and not options.console_socket and not options.foreground:
            raise ConfigError("process.terminal is true but no --console-socket was given "
                              "(a detached container needs one for its terminal)")
        state = ContainerState(
            id=container_id, bundle=str(bundle.path), rootfs=str(bundle.rootfs),
            created=now_rfc3339(), annotations=dict(spec.annotations),
            vm_dir=str(vm_dir_for(str(self.root), container_id)))
        self.store.create(state)
        with contextlib.ExitStack() as undo:
            undo.callback(self.store.remove, container_id)
            with self.store.lock(container_id):
                self._create_locked(state, bundle, options, undo)
                undo.pop_all()
        return state

    def _create_locked(self, state: ContainerState, bundle: Bundle, options: CreateOptions,
                       undo: contextlib.ExitStack) -> None:
        spec = bundle.spec
        assert spec.process is not None
        layout = self.layout(state)
        if layout.root.exists():
            teardown.stop_quietly(layout)  # left by a crash under the same id: stop it
        guestspec.check(spec, bundle.rootfs)  # a bad bundle fails before a VM starts for it
        config = SandboxConfig(sandbox_id=state.id, vm_dir=str(layout.root),
                               memory_mib=vm_memory_mib(spec), hostname=spec.hostname or "",
                               netns=_netns(spec), debug=self.debug)
        handle = start_sandbox(config)
        # a sandbox from the warm pool lives in the pool member's directory
        layout = handle.layout
        state.vm_dir = str(layout.root)
        undo.callback(teardown.stop_quietly, layout)
        gspec = guestspec.guest_spec(spec, bundle.rootfs, Share(layout.shared), state.id)
        state.monitor_pid = handle.monitor_pid
        state.boot_id = str(handle.info.get("boot_id", ""))
        state.kernel_release = str(handle.info.get("kernel_release", ""))
        oci = convert.spec_to_proto(gspec)
        asyncio.run(call_agent(state, lambda agent: agent.create_container(state.id, oci)))
        state.status = Status.CREATED
        if not options.foreground:
            master = slave = None
            if spec.process.terminal:
                assert options.console_socket is not None
                master, slave = console.open_pty()
                console.send_console(options.console_socket, master, os.ttyname(slave))
                os.close(master)
            pid = shim.spawn(shim.ShimSpec(layout.shim_socket, state.id, console=slave,
                                           netns=_netns(spec),
                                           log_path=_shim_log(layout)))
            if slave is not None:
                os.close(slave)
            undo.callback(teardown.kill_quietly, pid)
            state.pid = pid
            state.pid_start = process_start_time(pid) or 0
        if spec.hooks is not None:
            hooks.run_hooks("prestart", spec.hooks.prestart, state.oci_state())
            hooks.run_hooks("createRuntime", spec.hooks.create_runtime, state.oci_state())
        self.store.save(state)
        if options.pid_file is not None and state.pid:
            _write_pid_file(options.pid_file, state.pid)

    # --- start, kill, pause, resume, update -----------------------------------------------------

    def start(self, container_id: str) -> ContainerState:
        state = self.load(container_id)
        with self.store.lock(state.id):
            state = self.store.load(state.id)
            status = state.current_status()
            if status is Status.RUNNING or status is Status.PAUSED:
                raise ContainerStateError(f"cannot start container {state.id}: it is already "
                                          f"{status}", id=state.id)
            require(status, status.can_start(), state.id, "start")
            asyncio.run(call_agent(state, lambda agent: agent.start_container(state.id)))
            state.status = Status.RUNNING
            self.store.save(state)
        spec = load_bundle(state.bundle).spec
        if spec.hooks is not None:
            hooks.run_hooks("poststart", spec.hooks.poststart, state.oci_state(), fatal=False)
        return state

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        control.kill(self.store, container_id, sig, all_processes)

    def pause(self, container_id: str) -> None:
        control.pause(self.store, container_id)

    def resume(self, container_id: str) -> None:
        control.resume(self.store, container_id)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        control.update(self.store, container_id, resources)

    # --- queries -------------------------------------------------------------------------------

    def processes(self, container_id: str) -> list[int]:
        """Host pids of the container's processes, as runc reports them: its shims' pids."""
        state = self.load(container_id)
        status = state.current_status()
        require(status, status in (Status.RUNNING, Status.PAUSED, Status.CREATED), state.id,
                "list the processes of")
        pids = [state.pid] if state.pid_alive() else []
        for pid in state.execs.values():
            if process_start_time(pid) is not None:
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
        spec = load_bundle(state.bundle).spec
        if detach:
            slave = None
            if process.terminal:
                assert console_socket is not None
                master, slave = console.open_pty()
                console.send_console(console_socket, master, os.ttyname(slave))
                os.close(master)
            pid = shim.spawn(shim.ShimSpec(self.layout(state).shim_socket, state.id, exec_id,
                                           console=slave, netns=_netns(spec),
                                           log_path=_shim_log(self.layout(state))))
            if slave is not None:
                os.close(slave)
            with self.store.lock(state.id):
                fresh = self.store.load(state.id)
                fresh.execs[exec_id] = pid
                self.store.save(fresh)
            if pid_file is not None:
                _write_pid_file(pid_file, pid)
            return pid
        return asyncio.run(self._relay_foreground(state, exec_id, process.terminal))

    async def _relay_foreground(self, state: ContainerState, exec_id: str,
                                terminal: bool) -> int:
        client = await control.connect(state)
        saved = None
        try:
            if terminal and os.isatty(0):
                saved = termios.tcgetattr(0)
                console.make_raw(0)
            stdio = Stdio(stdin=0, stdout=1, stderr=None if terminal else 2, terminal=terminal,
                          tty_fd=0 if terminal and os.isatty(0) else None)
            return await ProcessRelay(client.agent, state.id, exec_id, stdio).run()
        except CocoonError as err:
            logger.warning("relay of %s: %s", state.id, err)
            return shim.LOST_STATUS
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            await client.close()

    # --- run in the foreground -----------------------------------------------------------------

    def run_foreground(self, container_id: str, options: CreateOptions) -> int:
        """`cocoon run` without --detach: create, start, relay stdio here, delete."""
        options = dataclasses.replace(options, foreground=True)
        state = self.create(container_id, options)
        exited = False
        try:
            if options.pid_file is not None:
                _write_pid_file(options.pid_file, os.getpid())
            spec = load_bundle(state.bundle).spec
            assert spec.process is not None
            terminal = spec.process.terminal

            async def go() -> int:
                client = await control.connect(state)
                try:
                    relay_task = asyncio.create_task(self._relay_started(client, state, terminal))
                    return await relay_task
                finally:
                    await client.close()

            with self.store.lock(state.id):
                fresh = self.store.load(state.id)
                fresh.pid = os.getpid()
                fresh.pid_start = process_start_time(os.getpid()) or 0
                self.store.save(fresh)
            status = asyncio.run(go())
            exited = True
            return status
        finally:
            self.delete(container_id, force=True, exited=exited)

    async def _relay_started(self, client: SandboxClient, state: ContainerState,
                             terminal: bool) -> int:
        saved = None
        stdio = Stdio(stdin=0, stdout=1, stderr=None if terminal else 2, terminal=terminal,
                      tty_fd=0 if terminal and os.isatty(0) else None)
        relay = ProcessRelay(client.agent, state.id, "", stdio)
        try:
            if terminal and os.isatty(0):
                saved = termios.tcgetattr(0)
                console.make_raw(0)
            runner = asyncio.create_task(relay.run())
            await asyncio.sleep(0)  # the relay's reads are queued before the process starts
            await client.agent.start_container(state.id)
            with self.store.lock(state.id):
                fresh = self.store.load(state.id)
                fresh.status = Status.RUNNING
                self.store.save(fresh)
            return await runner
        except CocoonError as err:
            logger.warning("run %s: %s", state.id, err)
            if isinstance(err, RPCError) and err.code != StatusCode.UNAVAILABLE:
                raise
            return shim.LOST_STATUS
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)

    # --- delete ----------------------------------------------------------------------------------

    def delete(self, container_id: str, force: bool = False, exited: bool = False) -> None:
        """Remove the container and its VM. `exited`: its processes are known to have ended
        (a foreground `run` relayed the exit), so nothing is signalled first."""
        teardown.delete(self.store, container_id, force=force, exited=exited)
