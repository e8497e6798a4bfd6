"""Bulk stdin through the VM's stdio ports (cocoon.agent.stdinport, cocoon.sandbox.stdinport).

As in test_stdio_ports: one VM for the agent-level tests, each process relayed by the real
`ProcessRelay`, its stdin a host pipe that a thread fills (and can hold open), its output
hashed on arrival; `cocoon run` at the end in a VM of its own. The stdin through `cocoon exec`
(200 MB, checked by digest) is in test_stdio_ports.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoon.oci import convert
from cocoon.oci.spec import Process
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.template.spec import STDIO_PORTS
from tests.vm.container_kit import (
    GuestSandbox,
    container_spec,
    make_bundle,
    module_sandbox,
    run_foreground,
)
from tests.vm.test_stdio_ports import Sink

pytestmark = pytest.mark.vm

MB = 1_000_000


@pytest.fixture(scope="module")
def sandbox() -> Iterator[GuestSandbox]:
    yield from module_sandbox("csi")


class Feeder:
    """The host pipe a relay reads stdin from: a thread writes `data` into it, counting what the
    pipe took, holds it open `hold` s more, then closes it (the caller's end of file)."""

    def __init__(self, data: bytes, hold: float = 0.0) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.data = data
        self.hold = hold
        self.written = 0
        self.closed_at = 0.0
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        view = memoryview(self.data)
        try:
            while self.written < len(view):
                self.written += os.write(self.write_fd, view[self.written:self.written + 65536])
            time.sleep(self.hold)
        except BrokenPipeError:
            pass  # the relay stopped reading: the process is gone
        finally:
            self.closed_at = time.monotonic()
            os.close(self.write_fd)

    def finish(self) -> None:
        os.close(self.read_fd)  # a writer still blocked gets EPIPE
        self._thread.join(timeout=60)


@dataclass
class Fed:
    status: int
    out: Sink
    ended_at: float
    stdin_port: int | None


async def exec_fed(box: GuestSandbox, client: SandboxClient, cid: str, eid: str, script: str,
                   feeder: Feeder) -> Fed:
    """ExecProcess `sh -c script` with `feeder` as its stdin, relayed until it exits."""
    out, err = Sink(), Sink()
    process = convert.process_to_proto(Process(args=("sh", "-c", script), cwd="/"))
    await client.agent.exec_process(cid, eid, process, timeout=60.0)
    relay = ProcessRelay(client.agent, cid, eid,
                         Stdio(feeder.read_fd, out.write_fd, err.write_fd),
                         box.layout.stdio_socket)
    status = await relay.run(forward_signals=False)
    ended_at = time.monotonic()
    await asyncio.to_thread(feeder.finish)
    for sink in (out, err):
        await asyncio.to_thread(sink.finish)
    assert status == 0 or err.head, err.head
    return Fed(status, out, ended_at, relay.stdin_port)


def _md5_line(fed: Fed) -> str:
    return fed.out.head.split()[0].decode() if fed.out.head else ""


async def _sleeper(box: GuestSandbox, client: SandboxClient, cid: str) -> None:
    await box.create(client, cid, container_spec(["sleep", "100000"]))
    await client.agent.start_container(cid, timeout=30.0)


def test_stdin_through_a_port_whole_and_ended_when_the_caller_closes(
        sandbox: GuestSandbox) -> None:
    """20 MB through a port, checked by digest; the caller keeps its end open 2 s after the
    last byte: `md5sum` cannot answer before that, and answers once it is closed."""
    data = random.Random(1).randbytes(20 * MB)

    async def scenario() -> tuple[Fed, Feeder]:
        client = await sandbox.connect()
        try:
            await _sleeper(sandbox, client, "whole")
            feeder = Feeder(data, hold=2.0)
            fed = await exec_fed(sandbox, client, "whole", "e", "md5sum", feeder)
            await sandbox.remove(client, "whole")
            return fed, feeder
        finally:
            await client.close()

    fed, feeder = asyncio.run(scenario())
    assert fed.status == 0
    assert fed.stdin_port is not None, "stdin did not go through a port"
    assert _md5_line(fed) == hashlib.md5(data).hexdigest()
    assert fed.ended_at >= feeder.closed_at, "the process saw end of file before the caller's"


def test_a_slow_reader_holds_the_writer_back_and_loses_nothing(sandbox: GuestSandbox) -> None:
    """The container sleeps 5 s before it reads: meanwhile the caller's writes block (30 MB
    cannot all be in flight), then every byte arrives, in order."""
    data = random.Random(2).randbytes(30 * MB)

    async def scenario() -> tuple[Fed, int]:
        client = await sandbox.connect()
        try:
            await _sleeper(sandbox, client, "slow")
            feeder = Feeder(data)
            task = asyncio.create_task(
                exec_fed(sandbox, client, "slow", "e", "sleep 5; md5sum", feeder))
            await asyncio.sleep(4.0)
            during = feeder.written
            fed = await task
            await sandbox.remove(client, "slow")
            return fed, during
        finally:
            await client.close()

    fed, during = asyncio.run(scenario())
    assert fed.stdin_port is not None
    assert during < 12 * MB, f"{during} bytes taken while nobody read"
    assert _md5_line(fed) == hashlib.md5(data).hexdigest()


def test_no_free_port_falls_back_and_ports_come_back_without_stale_bytes(
        sandbox: GuestSandbox) -> None:
    """Every port taken: stdin goes through WriteStdin, whole. Ports back: a process that reads
    100 kB of 8 MB and exits leaves its port to later stdins, which get only their own bytes."""
    zeros = convert.process_to_proto(Process(args=("cat", "/dev/zero"), cwd="/"))
    small = random.Random(3).randbytes(2 * MB)

    async def scenario() -> tuple[Fed, Fed, list[tuple[Fed, bytes]]]:
        client = await sandbox.connect()
        try:
            await _sleeper(sandbox, client, "hog")
            for n in range(STDIO_PORTS):  # each port bound to a stdout nobody reads
                await client.agent.exec_process("hog", f"z{n}", zeros, timeout=60.0)
                assert await client.agent.bind_stream("hog", f"z{n}", False) is not None
            await _sleeper(sandbox, client, "user")
            fallback = await exec_fed(sandbox, client, "user", "fb", "md5sum", Feeder(small))
            await sandbox.remove(client, "hog")
            quitter = await exec_fed(sandbox, client, "user", "q",
                                     "head -c 100000 >/dev/null; echo quit",
                                     Feeder(b"A" * (8 * MB)))
            later = []
            for n in range(4):
                mine = random.Random(10 + n).randbytes(MB)
                later.append((await exec_fed(sandbox, client, "user", f"l{n}", "md5sum",
                                             Feeder(mine)), mine))
                if later[-1][0].stdin_port == quitter.stdin_port:
                    break
                await asyncio.sleep(0.5)
            await sandbox.remove(client, "user")
            return fallback, quitter, later
        finally:
            await client.close()

    fallback, quitter, later = asyncio.run(scenario())
    assert fallback.stdin_port is None
    assert _md5_line(fallback) == hashlib.md5(small).hexdigest()
    assert quitter.stdin_port is not None and quitter.out.head == b"quit\n"
    for fed, mine in later:
        assert fed.stdin_port is not None
        assert _md5_line(fed) == hashlib.md5(mine).hexdigest(), "another stream's bytes"
    assert later[-1][0].stdin_port == quitter.stdin_port, "the quitter's port never came back"


def test_cli_run_carries_stdin_whole(state_root: Path, vm_root: Path, tmp_path: Path) -> None:
    data = random.Random(4).randbytes(30 * MB)
    bundle = make_bundle(tmp_path / "run", ["sh", "-c", "md5sum; exit 4"])
    ran = run_foreground(state_root, vm_root, bundle, "stdinrun", stdin=data)
    assert ran.returncode == 4, ran.stderr[-500:]
    assert ran.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
