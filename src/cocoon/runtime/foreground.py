"""The foreground relays: `cocoon run` and `cocoon exec` without --detach.

No per-process shim is forked then: the CLI process itself stands in for the guest process. It
relays its own stdin, stdout and stderr (its terminal in raw mode when the process has a tty),
forwards the signals it gets, and returns the process's exit status for the CLI to exit with.
`run` creates the container first and deletes it afterwards, whatever happened in between; its
relay's reads are queued before StartContainer, so no early output is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import termios
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from cocoon.errors import CocoonError, OCIError, RPCError
from cocoon.oci.state import ContainerState, StateStore, process_start_time
from cocoon.runtime import console, control, shim
from cocoon.runtime.options import CreateOptions
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.layout import Layout
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.runtime")


def _stdio(terminal: bool) -> Stdio:
    """This process's stdio for the guest process's (a terminal has no separate stderr)."""
    return Stdio(stdin=0, stdout=1, stderr=None if terminal else 2, terminal=terminal,
                 tty_fd=0 if terminal and os.isatty(0) else None)


@contextlib.contextmanager
def _raw_terminal(terminal: bool) -> Iterator[None]:
    """Our terminal in raw mode while a guest process with a tty has it; restored after."""
    saved = None
    try:
        if terminal and os.isatty(0):
            saved = termios.tcgetattr(0)
            console.make_raw(0)
        yield
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


# --- exec ------------------------------------------------------------------------------------

def relay_exec(state: ContainerState, exec_id: str, terminal: bool) -> int:
    """Relay an exec'd process (ExecProcess already sent) until it exits; its status."""
    return asyncio.run(_relay_exec(state, exec_id, terminal))


async def _relay_exec(state: ContainerState, exec_id: str, terminal: bool) -> int:
    client = await control.connect(state)
    try:
        with _raw_terminal(terminal):
            return await ProcessRelay(client.agent, state.id, exec_id, _stdio(terminal),
                                      Layout(Path(state.vm_dir)).stdio_socket).run()
    except CocoonError as err:
        logger.warning("relay of %s: %s", state.id, err)
        return shim.LOST_STATUS
    finally:
        await client.close()


# --- run -------------------------------------------------------------------------------------

def run(store: StateStore, container_id: str, options: CreateOptions,
        debug: bool = False) -> int:
    """`cocoon run` without --detach: create, start, relay stdio here, delete."""
    from cocoon.runtime import create, teardown  # the VM machinery: not for `exec`

    options = dataclasses.replace(options, foreground=True)
    state = create.create(store, container_id, options, debug=debug)
    exited = False
    try:
        if options.pid_file is not None:
            create.write_pid_file(options.pid_file, os.getpid())
        spec = store.config(state.id)
        assert spec.process is not None
        terminal = spec.process.terminal

        async def go() -> int:
            client = await control.connect(state)
            try:
                return await _relay_started(
                    client, state, terminal,
                    lambda: create.start_async(store, state.id, client.agent))
            finally:
                await client.close()

        with store.lock(state.id):
            fresh = store.load(state.id)
            fresh.pid = os.getpid()
            fresh.pid_start = process_start_time(os.getpid()) or 0
            store.save(fresh)
        status = asyncio.run(go())
        exited = True
        return status
    finally:
        teardown.delete(store, container_id, force=True, exited=exited)


async def _relay_started(client: SandboxClient, state: ContainerState, terminal: bool,
                         start: Callable[[], Awaitable[ContainerState]]) -> int:
    """Relay the container's init process, started (by `start`, the same start as `cocoon
    start`'s, its checks and poststart hooks included) once the relay's reads are queued."""
    relay = ProcessRelay(client.agent, state.id, "", _stdio(terminal),
                         Layout(Path(state.vm_dir)).stdio_socket)
    try:
        with _raw_terminal(terminal):
            runner = asyncio.create_task(relay.run())
            await asyncio.sleep(0)  # the relay's reads are queued before the process starts
            try:
                await start()
            except BaseException:
                runner.cancel()
                raise
            return await runner
    except CocoonError as err:
        logger.warning("run %s: %s", state.id, err)
        if isinstance(err, OCIError) or (isinstance(err, RPCError)
                                         and err.code != StatusCode.UNAVAILABLE):
            raise
        return shim.LOST_STATUS
