"""The OCI operations on containers: what every CLI verb asks for, with the lifecycle rules.

Each operation takes the container's lock, checks the status against the rule for it
(`cocoon.oci.state`), acts on the sandbox, and saves the new state before it releases the lock.
Creation and start are `runtime.create`'s, deletion `runtime.teardown`'s, the agent's small
verbs and queries `runtime.control`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import termios
from pathlib import Path
from typing import Any

from cocoon.errors import CocoonError, ConfigError, RPCError
from cocoon.oci import convert
from cocoon.oci.bundle import load_bundle
from cocoon.oci.spec import Process
from cocoon.oci.state import (
    ContainerState,
    StateStore,
    Status,
    process_start_time,
    require,
    validate_id,
)
from cocoon.protocols.gen import agent_pb2
from cocoon.runtime import console, control, create, shim, teardown
from cocoon.runtime.control import call_agent
from cocoon.runtime.create import CreateOptions
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.runtime")

__all__ = ["CreateOptions", "Runtime"]


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

    # --- create, start, kill, pause, resume, update ---------------------------------------------

    def create(self, container_id: str, options: CreateOptions) -> ContainerState:
        return create.create(self.store, container_id, options, debug=self.debug)

    def start(self, container_id: str) -> ContainerState:
        return create.start(self.store, container_id)

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
            pid = create.spawn_shim(self.layout(state), state.id, exec_id, create.netns_of(spec),
                                    console_socket if process.terminal else None)
            with self.store.lock(state.id):
                fresh = self.store.load(state.id)
                fresh.execs[exec_id] = pid
                self.store.save(fresh)
            if pid_file is not None:
                create.write_pid_file(pid_file, pid)
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
                create.write_pid_file(options.pid_file, os.getpid())
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
