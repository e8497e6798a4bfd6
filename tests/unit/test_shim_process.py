"""containerd's view of a task process: the rules for each status and the exit record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cocoon.errors import RPCError
from cocoon.shim.address import PodRef
from cocoon.shim.process import CREATED, RUNNING, STOPPED, ShimContainer, ShimProcess
from cocoon.shim.stdio import OpenStdio, StdioPaths
from cocoon.ttrpc.status import StatusCode


def _process(exec_id: str = "") -> ShimProcess:
    return ShimProcess("c1", exec_id, OpenStdio(StdioPaths()))


def test_names_and_event_ids() -> None:
    assert (_process().name, _process().event_id) == ("c1", "c1")
    assert (_process("e1").name, _process("e1").event_id) == ("c1/e1", "e1")


def test_exit_is_recorded_once_stopped() -> None:
    process = _process()
    process.require((CREATED,), "start")
    process.record_exit(137)
    assert (process.status, process.exit_status) == (STOPPED, 137)
    assert process.exited_at is not None
    with pytest.raises(RPCError) as stopped:
        process.require_live("signal")
    assert stopped.value.code == StatusCode.NOT_FOUND
    assert "already finished" in str(stopped.value)


def test_wrong_status_is_a_failed_precondition() -> None:
    process = _process()
    process.status = RUNNING
    with pytest.raises(RPCError, match="cannot delete c1: it is running") as err:
        process.require((CREATED, STOPPED), "delete")
    assert err.value.code == StatusCode.FAILED_PRECONDITION


def test_container_finds_its_processes() -> None:
    async def scenario() -> None:
        init, exe = _process(), _process("e1")
        container = ShimContainer("c1", Path("/b"), PodRef("c1", True), init, execs={"e1": exe})
        assert container.process("") is init and container.process("e1") is exe
        assert container.processes() == [init, exe]
        with pytest.raises(RPCError, match="process e2 of container c1 does not exist"):
            container.process("e2")

    asyncio.run(scenario())
