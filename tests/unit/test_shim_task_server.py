"""The containerd shim's task service behind its real ttrpc server, against any request: every
method, broken protobuf, huge fields, unknown ids, broken frames. Each call gets a ttrpc answer
(an error status when it must), the server closes a finished connection at once, no handler
raises anything but a Cocoon error, and the server still answers a new connection afterwards
(tests/framework/taskfuzz.py; bench/fuzz.py's `task` target runs the same at volume)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.ttrpc.frame import MAX_DATA_SIZE
from cocoon.ttrpc.status import StatusCode
from tests.framework.taskfuzz import (
    HEADER,
    METHODS,
    SERVICE,
    Crashes,
    Outcome,
    TaskTarget,
    request_frame,
    seeds,
)

SEEDS = [(method, request.SerializeToString()) for method, request in seeds()]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path) -> Iterator[None]:
    """Whatever path a mutated request names relatively, it is looked up in an empty place."""
    before = os.getcwd()
    os.chdir(tmp_path)
    yield
    os.chdir(before)


def exchange(frames: bytes) -> Outcome:
    """Send `frames` on one connection to a fresh task server; the promises checked."""
    async def scenario() -> Outcome:
        target = TaskTarget()
        crashes = Crashes()
        try:
            with crashes.watching():
                outcome = await target.exchange(frames)
                alive = await target.alive()
        finally:
            await target.close()
        assert not outcome.broken_answer, outcome.broken_answer
        assert outcome.closed_in_time, "the server did not close a finished connection"
        assert [r.getMessage() for r in crashes.records] == []
        assert alive, "the server no longer answers Connect"
        return outcome

    outcome: Outcome = run(scenario())
    return outcome


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)
    return asyncio.run(bounded())


def frames(*calls: tuple[str, bytes]) -> bytes:
    return b"".join(request_frame(2 * i + 1, method, payload)
                    for i, (method, payload) in enumerate(calls))


def test_every_seed_request_gets_an_answer() -> None:
    outcome = exchange(frames(*SEEDS))
    # every call but Wait on the running c1 (it waits for an exit until the client goes)
    waiting = sum(1 for method, request in seeds()
                  if method == "Wait" and getattr(request, "id", "") == "c1"
                  and not getattr(request, "exec_id", ""))
    assert len(outcome.statuses) == len(SEEDS) - waiting


@pytest.mark.parametrize("method", [m for m in METHODS  # Checkpoint: UNIMPLEMENTED for all
                                    if m not in ("Create", "Shutdown", "Checkpoint")])
def test_an_unknown_id_is_not_found(method: str) -> None:
    request = api.DESCRIPTOR.services_by_name["Task"].methods_by_name[method].input_type
    message = GetMessageClass(request)(id="nope")
    outcome = exchange(frames((method, message.SerializeToString())))
    assert [s.code for s in outcome.statuses] == [StatusCode.NOT_FOUND], outcome.statuses


@pytest.mark.parametrize("cid", ["", "../c1", "c1\n", "a/b", "x" * 300])
def test_create_refuses_an_id_that_cannot_name_a_container(cid: str) -> None:
    create = api.CreateTaskRequest(id=cid, bundle="/nonexistent/bundle")
    outcome = exchange(frames(("Create", create.SerializeToString())))
    assert [s.code for s in outcome.statuses] == [StatusCode.INVALID_ARGUMENT]
    assert "invalid container id" in outcome.statuses[0].message


def test_a_huge_field_is_answered_and_an_oversized_frame_closes_that_connection_only() -> None:
    huge = api.StateRequest(id="x" * (3 << 20)).SerializeToString()
    outcome = exchange(frames(("State", huge), ("State", api.StateRequest(
        id="c2").SerializeToString())))
    assert [s.code for s in outcome.statuses] == [StatusCode.NOT_FOUND, StatusCode.OK]
    oversized = HEADER.pack(MAX_DATA_SIZE + 1, 1, 1, 0)
    assert exchange(oversized).statuses == []  # dropped, and the server lives on


@FUZZ
@given(calls=st.lists(st.tuples(st.sampled_from(METHODS), st.binary(max_size=300)),
                      min_size=1, max_size=12))
def test_any_payload_for_any_method_gets_a_ttrpc_answer(calls: list[tuple[str, bytes]]) -> None:
    outcome = exchange(frames(*calls))
    assert len(outcome.statuses) >= len(calls) - sum(m == "Wait" for m, _ in calls)


@FUZZ
@given(data=st.data())
def test_mutated_seed_requests_get_a_ttrpc_answer(data: st.DataObject) -> None:
    calls = []
    for _ in range(data.draw(st.integers(1, 8))):
        method, payload = data.draw(st.sampled_from(SEEDS))
        cut = data.draw(st.integers(0, len(payload)))
        flips = data.draw(st.lists(st.integers(0, max(len(payload) - 1, 0)), max_size=3))
        mutated = bytearray(payload[:cut] + data.draw(st.binary(max_size=16)))
        for at in flips:
            if at < len(mutated):
                mutated[at] ^= 0xFF
        calls.append((data.draw(st.sampled_from([method, method, *METHODS, "Nope"])),
                      bytes(mutated)))
    exchange(frames(*calls))


@FUZZ
@given(stream=st.binary(max_size=400), service=st.sampled_from([SERVICE, "", "x.Task"]),
       timeout=st.integers(-(1 << 63), (1 << 63) - 1), flags=st.integers(0, 255))
def test_broken_frames_and_envelopes_close_or_answer(stream: bytes, service: str, timeout: int,
                                                     flags: int) -> None:
    exchange(request_frame(1, "State", b"\x0a\x02c1", service=service, timeout_nano=timeout,
                           flags=flags) + stream)
