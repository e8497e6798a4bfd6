"""The containers of a pod share namespaces inside one VM.

A namespace entry with `path: "container:<id>"` makes the new container join that container's
namespace instead of creating one (the containerd shim sends this for a pod's containers). Here
a "pause" container holds the pod's namespaces and an "app" container joins its ipc, uts and
pid namespaces in the same VM, while keeping a mount namespace of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from cocoon.errors import RPCError
from cocoon.protocols.gen import agent_pb2
from cocoon.ttrpc.status import StatusCode
from tests.vm.container_kit import GuestSandbox, Result, container_spec, module_sandbox

pytestmark = pytest.mark.vm

PROBE = ("echo host=$(hostname); echo pids=$(ls -d /proc/[0-9]* | wc -l); "
         "echo one=$(cat /proc/1/cmdline | tr '\\0' ' '); "
         "for n in ipc uts pid mnt; do echo self_$n=$(readlink /proc/self/ns/$n); "
         "echo pause_$n=$(readlink /proc/1/ns/$n); done")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[GuestSandbox]:
    """One VM for the module, named as a pod's, checked for leaks at the end."""
    yield from module_sandbox("ckp", sandbox_id="pod")


def joining(kinds: tuple[str, ...], other: str = "pause") -> Any:
    def edit(spec: dict[str, Any]) -> None:
        spec["hostname"] = ""
        spec["linux"]["namespaces"] = [
            {"type": n["type"], "path": f"container:{other}"} if n["type"] in kinds else n
            for n in spec["linux"]["namespaces"]]
    return edit


def _facts(result: Result) -> dict[str, str]:
    return dict(line.split("=", 1) for line in result.out.splitlines() if "=" in line)


async def _pod(sandbox: GuestSandbox, app_edit: Any) -> Result:
    """Start the pause container, run the app container next to it, tear both down."""
    client = await sandbox.connect()
    try:
        def pause_edit(spec: dict[str, Any]) -> None:
            spec["hostname"] = "pod-host"

        await sandbox.create(client, "pause", container_spec(["sleep", "600"], pause_edit))
        try:
            await sandbox.call(client, "StartContainer",
                               agent_pb2.StartContainerRequest(container_id="pause"))
            await sandbox.create(client, "app", container_spec(["sh", "-c", PROBE], app_edit))
            try:
                pending = asyncio.create_task(sandbox.output_of(client, "app"))
                await asyncio.sleep(0)
                await sandbox.call(client, "StartContainer",
                                   agent_pb2.StartContainerRequest(container_id="app"))
                return await pending
            finally:
                await sandbox.remove(client, "app")
        finally:
            await sandbox.remove(client, "pause")
    finally:
        await client.close()


def test_app_joins_the_pause_containers_ipc_uts_and_pid_namespaces(
        sandbox: GuestSandbox) -> None:
    result = asyncio.run(_pod(sandbox, joining(("ipc", "uts", "pid"))))
    assert result.status == 0, result
    got = _facts(result)
    assert got["host"] == "pod-host"
    assert got["one"] == "sleep 600"  # the pause container's process is PID 1 of the pod
    assert int(got["pids"]) >= 5  # sleep, and sh with the probe's subshell, ls and wc
    for kind in ("ipc", "uts", "pid"):
        assert got[f"self_{kind}"] == got[f"pause_{kind}"], (kind, result.out)
    assert got["self_mnt"] != got["pause_mnt"]  # its root is its own


def test_without_joining_the_app_has_namespaces_of_its_own(sandbox: GuestSandbox) -> None:
    def own(spec: dict[str, Any]) -> None:
        spec["hostname"] = "app-host"

    result = asyncio.run(_pod(sandbox, own))
    got = _facts(result)
    assert got["host"] == "app-host"
    assert got["one"].startswith("sh -c")  # PID 1 of its own pid namespace: no pause here


async def _create_refused(sandbox: GuestSandbox, edit: Any) -> RPCError:
    client = await sandbox.connect()
    try:
        with pytest.raises(RPCError) as caught:
            await sandbox.create(client, "lonely", container_spec(["true"], edit))
        return caught.value
    finally:
        await client.close()


def test_joining_an_unknown_container_is_refused(sandbox: GuestSandbox) -> None:
    err = asyncio.run(_create_refused(sandbox, joining(("ipc",), other="ghost")))
    assert err.code == StatusCode.NOT_FOUND
    assert "ghost" in err.status_message and "linux.namespaces" in err.status_message


def test_a_mount_namespace_cannot_be_joined(sandbox: GuestSandbox) -> None:
    err = asyncio.run(_create_refused(sandbox, joining(("mount",), other="ghost")))
    assert err.code == StatusCode.INVALID_ARGUMENT
    assert "mount namespace cannot be shared" in err.status_message
