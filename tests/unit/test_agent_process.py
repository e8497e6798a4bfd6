"""The reaper and the process record, with real child processes of the test."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tty

from cocoon.agent.process import Process, Reaper, exit_code


def _child(body: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            if body == "exit7":
                os._exit(7)
            if body == "sleep":
                time.sleep(30)
        finally:
            os._exit(0)
    return pid


def test_exit_code_is_the_shells() -> None:
    pid = _child("exit7")
    assert exit_code(os.waitpid(pid, 0)[1]) == 7
    pid = _child("sleep")
    os.kill(pid, signal.SIGTERM)
    assert exit_code(os.waitpid(pid, 0)[1]) == 128 + signal.SIGTERM


async def _with_reaper(scenario: str) -> tuple[int, ...]:
    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    try:
        if scenario == "registered":
            pid = _child("sleep")
            process = Process("c", "", terminal=False, stdin=None, stdout=None, stderr=None)
            reaper.register(pid, process)
            os.kill(pid, signal.SIGKILL)
            return (await asyncio.wait_for(process.wait(), 10),)
        if scenario == "early":
            pid = _child("exit7")
            await asyncio.sleep(0.3)  # exits and is reaped before anyone claims it
            process = Process("c", "", terminal=False, stdin=None, stdout=None, stderr=None)
            reaper.register(pid, process)
            return (process.exit_status or -1, int(process.exited))
        if scenario == "waiter":
            pid = _child("exit7")
            future = reaper.wait_pid(pid)
            return (await asyncio.wait_for(future, 10),)
        if scenario == "forget":
            pid = _child("sleep")
            future = reaper.wait_pid(pid)
            reaper.forget(pid)  # the pid turned out to be a container process
            process = Process("c", "", terminal=False, stdin=None, stdout=None, stderr=None)
            reaper.register(pid, process)
            os.kill(pid, signal.SIGTERM)
            return (await asyncio.wait_for(process.wait(), 10), int(future.cancelled()))
        raise AssertionError(scenario)
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)


def test_a_registered_process_gets_its_status() -> None:
    assert asyncio.run(_with_reaper("registered")) == (137,)


def test_a_status_that_arrives_before_registration_is_kept() -> None:
    assert asyncio.run(_with_reaper("early")) == (7, 1)


def test_a_waiter_gets_a_setup_processs_status() -> None:
    assert asyncio.run(_with_reaper("waiter")) == (7,)


def test_forget_hands_the_status_to_the_process() -> None:
    assert asyncio.run(_with_reaper("forget")) == (143, 1)


async def _terminal_roundtrip() -> tuple[bytes, bytes, bool]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo: what goes each way stays apart
    process = Process("c", "", terminal=True, stdin=None, stdout=None, stderr=None)
    process.attach_terminal(master)
    assert process.stdout is not None and process.stdin is not None
    os.write(slave, b"from the container\n")
    first = await asyncio.wait_for(process.stdout.read(100), 5)
    await process.stdin.write(b"typed\n")
    typed = os.read(slave, 100)
    os.close(slave)
    rest = await asyncio.wait_for(process.stdout.read(100), 5)  # EIO at the master: the end
    process.close()
    return first + rest, typed, process.pty_master is None


def test_attach_terminal_gives_the_process_its_streams() -> None:
    output, typed, released = asyncio.run(_terminal_roundtrip())
    assert output.replace(b"\r", b"") == b"from the container\n"
    assert typed.replace(b"\r", b"") == b"typed\n"
    assert released
