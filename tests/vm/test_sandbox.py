"""The sandbox monitor with a real guest: boot, many clients, QEMU's death, a hostile guest.

Each test boots its own VM through the launcher (about 6 s under TCG) in a private VM root; the
leak check (tests/conftest.py) then proves that no QEMU, virtiofsd or monitor process, mount or
directory of it is left. Bounds are generous where the machine's load decides (boot, teardown)
and tight only where the behaviour is promised (2 s from QEMU's death to the clients' error).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from cocoon.errors import ConnectionLostError, RPCError, SandboxError
from cocoon.guest import assets
from cocoon.linux import privileges
from cocoon.protocols.gen import agent_pb2, health_pb2
from cocoon.sandbox import confinement
from cocoon.sandbox.agentclient import HEALTH
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.monitor import MAX_AGENT_FAILURES
from cocoon.ttrpc.status import StatusCode
from tests.framework.guests import ALWAYS, GARBAGE_REQUEST, misbehaving_image
from tests.framework.leaks import mounts_under
from tests.framework.sandbox import Sandbox, Sandboxes, children_of, path_gone, wait_gone

pytestmark = pytest.mark.vm

DEATH_BOUND = 2.0      # promised: clients hear of QEMU's death within this
TEARDOWN_BOUND = 20.0  # the monitor stops virtiofsd, removes its directory and exits
SLOW_CALL = 8.0        # a call that the agent holds (GetOOMEvent waits for an OOM)


async def oom_wait(client: SandboxClient, timeout: float) -> str:
    """A call the agent answers only when a container runs out of memory: it stays pending."""
    return await client.agent.get_oom_event(timeout=timeout)


async def request_garbage(client: SandboxClient) -> None:
    await client.ttrpc.call(HEALTH, "Version", health_pb2.CheckRequest(service=GARBAGE_REQUEST),
                            health_pb2.VersionCheckResponse, timeout=60.0)


def assert_unavailable(outcome: object, *words: str) -> str:
    assert isinstance(outcome, RPCError), f"expected an UNAVAILABLE error, got {outcome!r}"
    assert outcome.code == StatusCode.UNAVAILABLE, outcome
    for word in words:
        assert word in str(outcome), outcome
    return str(outcome)


async def wait_until_stopped(sandbox: Sandbox, pids: tuple[int, ...]) -> None:
    """Every process of the sandbox gone, its directory removed, nothing mounted under it."""
    assert await wait_gone(pids, TEARDOWN_BOUND) == [], sandbox.monitor_log()[-3000:]
    deadline = time.monotonic() + 5.0
    while not path_gone(sandbox.layout.root) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert path_gone(sandbox.layout.root), sorted(os.listdir(sandbox.layout.root))
    assert mounts_under([sandbox.layout.root]) == []


def test_a_vm_boots_cold_and_runs_the_guest_kernel(sandboxes: Sandboxes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCOON_TEMPLATES", "off")  # the cold path (templates: test_templates)
    sandbox = sandboxes.boot("boot")

    async def scenario() -> None:
        client = await sandbox.client()
        assert await client.agent.health(timeout=30.0)
        version = await client.ttrpc.call(HEALTH, "Version", health_pb2.CheckRequest(),
                                          health_pb2.VersionCheckResponse, timeout=30.0)
        details = await client.agent.guest_details(timeout=30.0)
        status = await client.status()
        kernel = assets.find_kernel()
        assert kernel is not None
        assert details.kernel_release == kernel.release == status.kernel_release
        assert details.kernel_release != os.uname().release
        assert details.agent_details.version == version.agent_version != ""
        assert details.mem_total_bytes > 100 << 20
        assert details.boot_id == sandbox.info["boot_id"] == status.boot_id
        assert status.state == "running"
        assert status.started_from == sandbox.info["started_from"] == "cold boot"
        assert status.monitor_pid == sandbox.monitor_pid
        for pid in (status.monitor_pid, status.qemu_pid, status.virtiofsd_pid):
            assert pid > 0 and Path(f"/proc/{pid}").exists()
        phases = {p.name: p.seconds for p in status.phases}
        order = ["qemu started", "kernel started", "agent started", "agent ready",
                 "health answered", "sandbox created"]
        assert sorted(phases, key=phases.__getitem__) == order
        assert stat.S_IMODE(sandbox.layout.monitor_socket.stat().st_mode) == 0o600
        await sandbox.close_clients()

    asyncio.run(scenario())
    assert "agent ready at" in sandbox.console_log()


def test_two_clients_are_answered_at_the_same_time(sandboxes: Sandboxes) -> None:
    sandbox = sandboxes.boot("clients")

    async def scenario() -> None:
        first, second = await sandbox.client(), await sandbox.client()
        slow = asyncio.ensure_future(oom_wait(first, SLOW_CALL))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        calls: list[Awaitable[object]] = []
        for _ in range(5):
            calls += [first.agent.health(timeout=SLOW_CALL),
                      second.agent.guest_details(timeout=SLOW_CALL),
                      second.agent.health(timeout=SLOW_CALL),
                      first.agent.guest_details(timeout=SLOW_CALL),
                      second.status()]
        answers = await asyncio.gather(*calls)
        elapsed = time.monotonic() - started
        assert not slow.done(), "the slow call ended early; the test proves nothing"
        assert_monitor_confined(sandbox.monitor_pid)
        boot_ids = {a.boot_id for a in answers if isinstance(a, agent_pb2.GuestDetailsResponse)}
        assert boot_ids == {sandbox.info["boot_id"]}
        assert [a for a in answers if isinstance(a, bool)] == [True] * 10
        assert elapsed < SLOW_CALL
        with pytest.raises(RPCError) as expired:
            await slow
        assert expired.value.code == StatusCode.DEADLINE_EXCEEDED
        # the abandoned stream does not disturb the connection it was made on
        assert await first.agent.health(timeout=30.0)
        await sandbox.close_clients()

    asyncio.run(scenario())


def assert_monitor_confined(pid: int) -> None:
    """Every thread of a running sandbox's monitor holds only what it keeps after the boot
    (cocoon.sandbox.confinement), in its bounding set too, with no_new_privs set."""
    want = confinement.kept(pooled=False)
    assert want == privileges.mask(("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE",
                                     "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"))
    threads = os.listdir(f"/proc/{pid}/task")
    assert len(threads) >= 1
    for tid in threads:
        status = privileges.status_of(pid, tid)
        assert status == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                          "CapAmb": 0, "NoNewPrivs": 1}, (tid, {
                              k: privileges.names(v) for k, v in status.items()})


def test_a_qemu_that_does_not_quit_is_killed_by_its_confined_monitor(
        sandboxes: Sandboxes) -> None:
    """QEMU is another user than its monitor, which keeps CAP_KILL for it: a QEMU that answers
    neither the power button nor `quit` (stopped here, as a hung or taken-over one would) is
    killed by the monitor itself when it is told to stop, and nothing is left."""
    sandbox = sandboxes.boot("hung")

    async def scenario() -> None:
        pids = await sandbox.pids()
        await sandbox.close_clients()
        virtiofsd = (pids.virtiofsd, *children_of(pids.virtiofsd))
        assert confinement.kept(pooled=False) & privileges.mask(("CAP_KILL",))
        os.kill(pids.qemu, signal.SIGSTOP)
        os.kill(pids.monitor, signal.SIGTERM)
        # the power button and quit go unanswered (about 10 s each), then SIGKILL
        assert await wait_gone((pids.qemu,), TEARDOWN_BOUND + 30.0) == []
        await wait_until_stopped(sandbox, (*pids.all(), *virtiofsd))
        log = sandbox.monitor_log()
        assert "Operation not permitted" not in log and "PermissionError" not in log, log[-2000:]

    asyncio.run(scenario())


def test_kill_9_of_qemu_fails_the_clients_and_leaves_nothing(sandboxes: Sandboxes) -> None:
    sandbox = sandboxes.boot("kill9")

    async def scenario() -> None:
        pids = await sandbox.pids()
        virtiofsd = (pids.virtiofsd, *children_of(pids.virtiofsd))
        first, second = await sandbox.client(), await sandbox.client()
        pending = [asyncio.ensure_future(oom_wait(c, 60.0)) for c in (first, second)]
        pending.append(asyncio.ensure_future(oom_wait(second, 60.0)))
        await asyncio.sleep(0.3)
        assert not any(p.done() for p in pending)
        killed = time.monotonic()
        sandbox.kill_qemu(pids.qemu)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*pending, return_exceptions=True), DEATH_BOUND + 1.0)
        heard = time.monotonic() - killed
        for outcome in outcomes:
            assert_unavailable(outcome, "sandbox kill9", "SIGKILL")
        assert heard < DEATH_BOUND, f"clients heard of QEMU's death after {heard:.2f} s"
        # a call after the death: refused at once, never left waiting
        with pytest.raises((RPCError, ConnectionLostError)) as late:
            await first.agent.health(timeout=10.0)
        if isinstance(late.value, RPCError):
            assert late.value.code == StatusCode.UNAVAILABLE
        await wait_until_stopped(sandbox, (*pids.all(), *virtiofsd))
        await sandbox.close_clients()

    asyncio.run(scenario())
    log = sandbox.monitor_log()
    assert "the VM exited (on signal SIGKILL)" in log
    assert "torn down" in log


@pytest.fixture(scope="module")
def misbehaving() -> Path:
    return misbehaving_image()


def test_garbage_from_the_guest_drops_the_channel_not_the_host(sandboxes: Sandboxes,
                                                              misbehaving: Path) -> None:
    sandbox = sandboxes.boot("garbage", initrd=str(misbehaving))

    async def scenario() -> None:
        pids = await sandbox.pids()
        first, second = await sandbox.client(), await sandbox.client()
        for violation in range(1, MAX_AGENT_FAILURES + 1):
            waiting = asyncio.ensure_future(oom_wait(first, 60.0))
            await asyncio.sleep(0.2)
            outcomes = await asyncio.gather(waiting, request_garbage(second),
                                            return_exceptions=True)
            for outcome in outcomes:
                assert_unavailable(outcome, "protocol error from the guest", "exceeds")
            log = sandbox.monitor_log()
            assert log.count("dropping the agent connection") == violation, log[-3000:]
            if violation == MAX_AGENT_FAILURES:
                break
            # the monitor reconnects and the (real) agent behind the garbage serves again
            assert await healthy_again(first), sandbox.monitor_log()[-3000:]
            status = await second.status()
            assert status.state == "running"
        # repeated violations: the monitor gives the sandbox up, cleanly
        await wait_until_stopped(sandbox, pids.all())
        await sandbox.close_clients()

    asyncio.run(scenario())
    assert sandbox.console_log().count("cocoon-test: garbage requested") == MAX_AGENT_FAILURES
    assert f"the guest broke the agent protocol {MAX_AGENT_FAILURES} times" in \
        sandbox.monitor_log()


async def healthy_again(client: SandboxClient, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return await client.agent.health(timeout=10.0)
        except RPCError as err:
            if err.code != StatusCode.UNAVAILABLE:
                raise
        await asyncio.sleep(0.1)
    return False


def test_a_guest_that_only_sends_garbage_fails_to_start(vm_root: Path,
                                                       misbehaving: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxError) as failed:
        Sandbox.boot("spew", initrd=str(misbehaving), kernel_args=(ALWAYS,))
    assert f"broke the agent protocol {MAX_AGENT_FAILURES} times" in str(failed.value)
    assert "\n" not in str(failed.value)
    assert time.monotonic() - started < 120.0
    assert list(vm_root.iterdir()) == []
