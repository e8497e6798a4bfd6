"""Bulk output through the VM's stdio ports (cocoon.agent.stdioports, cocoon.sandbox.stdioport).

One VM serves the agent-level tests: containers are made through the agent API and each process
is relayed by the real `ProcessRelay` into host pipes that the test reads (or does not read),
hashing what arrives. The CLI tests at the end run `cocoon exec` and `cocoon run` in VMs of
their own, in private roots checked for leaks.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cocoon.oci import convert
from cocoon.oci.spec import Process
from cocoon.sandbox.agentclient import StreamPort
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.template.spec import STDIO_PORTS
from tests.vm.container_kit import (
    COCOON,
    GuestSandbox,
    container_spec,
    make_bundle,
    module_sandbox,
    run_env,
    run_foreground,
)

pytestmark = pytest.mark.vm

MB = 1_000_000


@pytest.fixture(scope="module")
def sandbox() -> Iterator[GuestSandbox]:
    yield from module_sandbox("csp")


class Sink:
    """A host pipe the relay writes one stream into; a thread reads and hashes it, and can be
    held (not reading) to play a slow reader."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.go = threading.Event()
        self.go.set()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            self.go.wait()
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                return
            if len(self.head) < 200:
                self.head += chunk[:200]
            self.digest.update(chunk)
            self.size += len(chunk)

    def finish(self) -> None:
        """Close the relay's end and wait for everything written to be read."""
        os.close(self.write_fd)
        self.go.set()
        self._thread.join(timeout=60)
        os.close(self.read_fd)


@dataclass
class Relayed:
    status: int
    stdout: Sink
    stderr: Sink
    relay: ProcessRelay

    @property
    def bound(self) -> int:
        return len(self.relay.port_streams)


async def exec_relayed(box: GuestSandbox, client: SandboxClient, cid: str, eid: str,
                       script: str, hold: float = 0.0) -> Relayed:
    """ExecProcess `sh -c script` and relay it into two sinks (held for `hold` s at first)."""
    out, err = Sink(), Sink()
    if hold:
        out.go.clear()
    process = convert.process_to_proto(Process(args=("sh", "-c", script), cwd="/"))
    await client.agent.exec_process(cid, eid, process, timeout=60.0)
    relay = ProcessRelay(client.agent, cid, eid, Stdio(None, out.write_fd, err.write_fd),
                         box.layout.stdio_socket)
    runner = asyncio.create_task(relay.run(forward_signals=False))
    if hold:
        await asyncio.sleep(hold)
        out.go.set()
    status = await runner
    for sink in (out, err):
        await asyncio.to_thread(sink.finish)
    return Relayed(status, out, err, relay)


CHECKED = "head -c {n} /dev/urandom | tee /proc/self/fd/3 | sha256sum >&2"


def checked(result: Relayed, size: int) -> None:
    """The stdout the container hashed (its sha256 on stderr) is what arrived, all of it."""
    assert result.status == 0, result.stderr.head
    assert result.stdout.size == size
    claimed = result.stderr.head.split()[0].decode()
    assert claimed == result.stdout.digest.hexdigest()


async def _sleeper(box: GuestSandbox, client: SandboxClient, cid: str) -> None:
    await box.create(client, cid, container_spec(["sleep", "100000"]))
    await client.agent.start_container(cid, timeout=30.0)


def test_more_processes_than_ports_sequentially_and_at_once(sandbox: GuestSandbox) -> None:
    execs = STDIO_PORTS + 4  # two streams each: three times as many bindings as ports

    async def scenario() -> None:
        client = await sandbox.connect()
        try:
            await _sleeper(sandbox, client, "many")
            script = f"exec 3>&1; {CHECKED.format(n=MB)}"
            for n in range(execs):
                result = await exec_relayed(sandbox, client, "many", f"seq{n}", script)
                checked(result, MB)
                assert result.bound == 2, f"exec {n}: a port did not come back"
            results = await asyncio.gather(*(
                exec_relayed(sandbox, client, "many", f"par{n}", script)
                for n in range(STDIO_PORTS)))
            for result in results:
                checked(result, MB)
            bound = sum(r.bound for r in results)
            assert STDIO_PORTS // 2 <= bound <= STDIO_PORTS, bound  # the rest: ReadStdout
            await asyncio.sleep(1.0)
            again = await exec_relayed(sandbox, client, "many", "after", script)
            checked(again, MB)
            assert again.bound == 2
            await sandbox.remove(client, "many")
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_stopped_reader_stops_the_writer_and_loses_nothing(sandbox: GuestSandbox) -> None:
    """The reader stops for 5 s: the writer blocks meanwhile (100 MB cannot all be in flight),
    then every byte arrives, in order, and the exit status only after the last of them."""
    size = 100 * (1 << 20)
    script = ("exec 3>&1; dd if=/dev/zero bs=1M count=100 2>/dev/null | tee /proc/self/fd/3 "
              "| sha256sum >&2; echo wrote > /dev/shm/done; exit 5")

    async def scenario() -> tuple[Relayed, str, str]:
        client = await sandbox.connect()
        try:
            await _sleeper(sandbox, client, "slow")
            task = asyncio.create_task(
                exec_relayed(sandbox, client, "slow", "e", script, hold=5.0))
            await asyncio.sleep(4.0)
            during = await _guest_cat(sandbox, client, "slow", "/dev/shm/done")
            result = await task
            after = await _guest_cat(sandbox, client, "slow", "/dev/shm/done")
            await sandbox.remove(client, "slow")
            return result, during, after
        finally:
            await client.close()

    result, during, after = asyncio.run(scenario())
    assert during == "", "the writer finished while nobody read"
    assert after == "wrote\n"
    assert result.status == 5
    assert result.bound == 2
    assert result.stdout.size == size
    assert result.stdout.digest.hexdigest() == hashlib.sha256(bytes(size)).hexdigest()
    assert result.stderr.head.split()[0].decode() == result.stdout.digest.hexdigest()


async def _guest_cat(box: GuestSandbox, client: SandboxClient, cid: str, path: str) -> str:
    eid = f"cat{time.monotonic_ns()}"
    process = convert.process_to_proto(Process(args=("sh", "-c", f"cat {path} 2>/dev/null"),
                                               cwd="/"))
    await client.agent.exec_process(cid, eid, process, timeout=60.0)
    return (await box.output_of(client, cid, eid)).out


def test_ports_come_back_after_delete_and_after_a_host_that_left(
        sandbox: GuestSandbox) -> None:
    zeros = convert.process_to_proto(Process(args=("cat", "/dev/zero"), cwd="/"))

    async def fill(client: SandboxClient, cid: str) -> list[StreamPort]:
        """Every port bound to a `cat /dev/zero` of `cid` (none connected: each blocks)."""
        ports = []
        for n in range(STDIO_PORTS):
            await client.agent.exec_process(cid, f"z{n}", zeros, timeout=60.0)
            ports.append(await _bind_within(client, cid, f"z{n}", 5.0))
        await client.agent.exec_process(cid, "extra", zeros, timeout=60.0)
        assert await client.agent.bind_stream(cid, "extra", False) is None
        return ports

    async def scenario() -> None:
        client = await sandbox.connect()
        try:
            await _sleeper(sandbox, client, "hog")
            await fill(client, "hog")
            await sandbox.remove(client, "hog")  # its processes go, and their ports
            await _sleeper(sandbox, client, "next")
            ports = await fill(client, "next")  # so every port came back
            # a host that reads a little and hangs up (a relay killed): the writer gets EPIPE,
            # and its port comes back without a delete
            got = await _read_and_leave(sandbox, ports[0], MB)
            assert got >= MB
            status = await client.agent.wait_process("next", "z0", timeout=30.0)
            assert status == 128 + 13 or status == 1, status  # SIGPIPE, or EPIPE reported
            await client.agent.exec_process("next", "late", zeros, timeout=60.0)
            await _bind_within(client, "next", "late", 5.0)
            await sandbox.remove(client, "next")
        finally:
            await client.close()

    asyncio.run(scenario())


async def _bind_within(client: SandboxClient, cid: str, eid: str, seconds: float) -> StreamPort:
    """Bind the stdout of `cid/eid`, retrying while no port is free (one may be coming back)."""
    deadline = time.monotonic() + seconds
    while True:
        bound = await client.agent.bind_stream(cid, eid, False)
        if bound is not None:
            return bound
        assert time.monotonic() < deadline, f"no stdio port came back within {seconds} s"
        await asyncio.sleep(0.1)


async def _read_and_leave(box: GuestSandbox, port: StreamPort, least: int) -> int:
    """Connect to the port as its host, read at least `least` bytes, hang up."""
    reader, writer = await asyncio.open_unix_connection(str(box.layout.stdio_socket(port.port)))
    writer.write(port.token)
    await writer.drain()
    got = 0
    async with asyncio.timeout(60):
        while got < least:
            chunk = await reader.read(1 << 20)
            assert chunk and not chunk.strip(b"\0"), "not the process's zeros"
            got += len(chunk)
    writer.close()
    await writer.wait_closed()
    return got


def test_cli_exec_and_run_carry_stdout_and_stderr_intact(state_root: Path, vm_root: Path,
                                                         tmp_path: Path) -> None:
    """50 MB on stdout and 20 MB on stderr at once, through `cocoon exec` and `cocoon run`:
    each stream arrives whole and in order, and `run` exits with the container's status."""
    volume = tmp_path / "data"
    volume.mkdir()
    out, err = os.urandom(50 * MB), os.urandom(20 * MB)
    (volume / "out").write_bytes(out)
    (volume / "err").write_bytes(err)

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(volume),
                               "options": ["rbind", "ro"]})

    both = "cat /data/out & cat /data/err >&2; wait"
    env = run_env(vm_root)
    cli = [COCOON, "--root", str(state_root)]
    sleeper = make_bundle(tmp_path / "sleeper", ["sleep", "100000"], edit)
    subprocess.run([*cli, "run", "--detach", "--bundle", str(sleeper), "cli"], env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
                   timeout=300)
    try:
        result = subprocess.run([*cli, "exec", "cli", "sh", "-c", both], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
                                check=False)
    finally:
        subprocess.run([*cli, "delete", "--force", "cli"], env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-500:]
    assert len(result.stdout) == len(out) and result.stdout == out
    assert len(result.stderr) == len(err) and result.stderr == err

    bundle = make_bundle(tmp_path / "run", ["sh", "-c", f"{both}; exit 3"], edit)
    ran = run_foreground(state_root, vm_root, bundle, "clirun")
    assert ran.returncode == 3, ran.stderr[-500:]
    assert ran.stdout == out
    assert ran.stderr == err


def test_a_gigabyte_out_and_200_mb_in_checksummed(state_root: Path, vm_root: Path,
                                                 tmp_path: Path) -> None:
    """1 GiB through `cocoon exec`'s stdout (a 1 MiB random block from a volume, 1024 times)
    and 200 MB of random bytes through its stdin, each checked by digest on the other side."""
    import hashlib
    import random

    volume = tmp_path / "data"
    volume.mkdir()
    block = random.Random(7).randbytes(1 << 20)
    (volume / "block").write_bytes(block)

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(volume),
                               "options": ["rbind", "ro"]})

    env = run_env(vm_root)
    cli = [COCOON, "--root", str(state_root)]
    sleeper = make_bundle(tmp_path / "sleeper", ["sleep", "100000"], edit)
    subprocess.run([*cli, "run", "--detach", "--bundle", str(sleeper), "gb"], env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
                   timeout=300)
    try:
        expected = hashlib.sha256()
        for _ in range(1024):
            expected.update(block)
        proc = subprocess.Popen([*cli, "exec", "gb", "sh", "-c",
                                 "i=0; while [ $i -lt 1024 ]; do cat /data/block; "
                                 "i=$((i+1)); done"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        got = hashlib.sha256()
        received = 0
        while chunk := proc.stdout.read(1 << 20):
            got.update(chunk)
            received += len(chunk)
        assert proc.wait(timeout=600) == 0
        assert received == 1 << 30 and got.hexdigest() == expected.hexdigest()

        data = random.Random(13).randbytes(200 * MB)
        result = subprocess.run([*cli, "exec", "gb", "md5sum"], env=env, input=data,
                                capture_output=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-500:]
        assert result.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    finally:
        subprocess.run([*cli, "delete", "--force", "gb"], env=env, timeout=300, check=False)
