"""What the guest says in OOM events and guest details is checked before the host keeps it:
a lying guest gets an AgentError naming the field, never a crash, an id that cannot be a
container's, or a string that would not fit the monitor's ready report."""

from __future__ import annotations

import asyncio
import platform
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon import __version__
from cocoon.errors import AgentError
from cocoon.oci.state import MAX_ID_LENGTH
from cocoon.protocols.gen import agent_pb2
from cocoon.protocols.gen import containerd_events_pb2 as ev
from cocoon.sandbox import guestreplies
from cocoon.shim import task as shim_task
from tests.framework.fakeagent import FakeAgent, connected
from tests.unit.test_shim_task import serve

BOOT_ID = "0b5e4c47-6c1e-4d8e-9a59-05f4b2e9c7a1"
U64 = st.integers(0, 2**64 - 1)


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)
    return asyncio.run(bounded())


def real_details() -> agent_pb2.GuestDetailsResponse:
    """What the agent answers (agent/service.py), with this host's kernel standing in."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    return agent_pb2.GuestDetailsResponse(
        agent_details=agent_pb2.AgentDetails(version=__version__, init_daemon=True,
                                             storage_handlers=["virtio-fs"],
                                             supports_seccomp=True),
        kernel_release=platform.release(), mem_total_bytes=1 << 30, boot_id=boot_id,
        agent_started_ns=900_000_000, agent_ready_ns=1_200_000_000, uptime_ns=5 << 30)


def test_a_real_guests_details_pass() -> None:
    details = real_details()
    assert guestreplies.guest_details(details) is details


@pytest.mark.parametrize(("field", "value", "words"), [
    ("kernel_release", "6.1" + "x" * 62, "kernel release"),
    ("kernel_release", "6.1\n\x1b[2J", "kernel release"),
    ("kernel_release", "6.1 0", "kernel release"),
    ("boot_id", "b", "boot id"),
    ("boot_id", BOOT_ID.upper(), "boot id"),
    ("boot_id", BOOT_ID + "\n", "boot id"),
    ("boot_id", "x" * (1 << 20), "1048576 characters"),
    ("mem_total_bytes", 2**64 - 1, "memory size"),
    ("mem_block_size_bytes", 1 << 60, "memory block size"),
    ("uptime_ns", 1, "times"),                    # before the agent started
    ("agent_ready_ns", 1, "times"),               # ready before it started
    ("uptime_ns", 2**64 - 1, "times"),
])
def test_lying_guest_details_are_refused_by_name(field: str, value: object,
                                                 words: str) -> None:
    details = real_details()
    setattr(details, field, value)
    with pytest.raises(AgentError, match=words) as caught:
        guestreplies.guest_details(details)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_lying_agent_details_are_refused() -> None:
    for lie in (agent_pb2.AgentDetails(version="v" * 65),
                agent_pb2.AgentDetails(storage_handlers=["x"] * 33),
                agent_pb2.AgentDetails(extra_features=["a\0b"])):
        details = real_details()
        details.agent_details.CopyFrom(lie)
        with pytest.raises(AgentError):
            guestreplies.guest_details(details)


@settings(max_examples=300, deadline=None)
@given(kernel=st.text(max_size=80), boot=st.one_of(st.just(BOOT_ID), st.text(max_size=40)),
       version=st.text(max_size=70), handlers=st.lists(st.text(max_size=8), max_size=40),
       memory=U64, block=U64, started=U64, ready=U64, uptime=U64)
def test_any_guest_details_are_within_bounds_or_refused(
        kernel: str, boot: str, version: str, handlers: list[str], memory: int, block: int,
        started: int, ready: int, uptime: int) -> None:
    details = agent_pb2.GuestDetailsResponse(
        agent_details=agent_pb2.AgentDetails(version=version, device_handlers=handlers),
        kernel_release=kernel, boot_id=boot, mem_total_bytes=memory,
        mem_block_size_bytes=block, agent_started_ns=started, agent_ready_ns=ready,
        uptime_ns=uptime)
    try:
        kept = guestreplies.guest_details(details)
    except AgentError as err:
        assert "\n" not in str(err) and len(str(err)) < 400
        return
    for text in (kept.kernel_release, kept.agent_details.version,
                 *kept.agent_details.device_handlers):
        assert len(text) <= 64 and text.isascii() and text.isprintable() and " " not in text
    assert kept.boot_id in ("", BOOT_ID) or len(kept.boot_id) == 36
    assert kept.agent_started_ns <= kept.agent_ready_ns <= kept.uptime_ns
    assert max(kept.mem_total_bytes, kept.mem_block_size_bytes) <= guestreplies.MEMORY_LIMIT


@pytest.mark.parametrize("container_id", [
    "", ".", "..", "../c1", "c1/../c2", "/c1", "c1\n", "c 1", "-c1", "x" * (MAX_ID_LENGTH + 1),
    "\x00", "c1\x1b[2J"])
def test_an_oom_event_that_names_no_container_is_refused(container_id: str) -> None:
    agent = FakeAgent(replies={"GetOOMEvent": agent_pb2.OOMEvent(container_id=container_id)})

    async def scenario() -> None:
        async with connected(agent) as (client, _):
            with pytest.raises(AgentError, match="OOM event names no container") as caught:
                await client.get_oom_event()
            assert "\n" not in str(caught.value)

    run(scenario())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_oom_event_is_a_container_id_or_refused(container_id: str) -> None:
    try:
        kept = guestreplies.oom_container(container_id)
    except AgentError:
        return
    assert kept == container_id and 0 < len(kept) <= MAX_ID_LENGTH
    assert "/" not in kept and kept not in (".", "..") and kept.isascii() and kept.isprintable()


def test_the_shims_oom_watch_publishes_its_own_containers_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lies are skipped and the watch goes on; an id of no container of the pod (another
    sandbox's, say) is not published; the pod's own container is."""
    monkeypatch.setattr(shim_task, "OOM_LIE_PAUSE", 0.0)
    said = iter(["../c1", "x" * 300, "c9", "c1"])
    agent = FakeAgent()

    async def oom(request: Any) -> agent_pb2.OOMEvent:
        try:
            return agent_pb2.OOMEvent(container_id=next(said))
        except StopIteration:
            await asyncio.Event().wait()  # no more OOMs: the call waits, as the agent's does
            raise

    agent.handlers["GetOOMEvent"] = oom
    published: list[Any] = []

    async def scenario(tasks: shim_task.TaskService) -> None:
        monkeypatch.setattr(tasks.events, "publish", published.append)
        watch = asyncio.create_task(tasks._watch_oom())
        while not published and not watch.done():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not watch.done()  # the lies did not end it
        watch.cancel()

    serve(agent, scenario)
    assert published == [ev.TaskOOM(container_id="c1")]
    assert [m for m in agent.methods() if m == "GetOOMEvent"] == ["GetOOMEvent"] * 5
