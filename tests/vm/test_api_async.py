"""`cocoon.AsyncSandbox`, the asyncio twin, through the public API only, with real VMs (in a
private VM root with the leak check)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cocoon import AsyncSandbox
from cocoon.errors import OutOfMemoryError, SandboxTimeoutError

pytestmark = pytest.mark.vm

PARALLEL = 10


def vm_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []


def test_run_popen_and_files(vm_root: Path) -> None:
    async def scenario() -> None:
        async with AsyncSandbox(memory_mib=32) as sandbox:
            result = await sandbox.run(["sh", "-c", "cat; echo err >&2; exit 4"], input=b"in")
            assert (result.returncode, result.stdout, result.stderr) == (4, b"in", b"err\n")
            process = await sandbox.popen(["sh", "-c", "for i in 1 2 3; do echo $i; done"])
            assert process.stdout is not None
            assert [line async for line in process.stdout] == [b"1\n", b"2\n", b"3\n"]
            assert await process.wait() == 0
            await sandbox.write_file("/tmp/f", b"\0\xff" * 1000)
            assert await sandbox.read_file("/tmp/f") == b"\0\xff" * 1000
            with pytest.raises(OutOfMemoryError):
                await sandbox.run(["awk", 'BEGIN { s = "x"; while (1) s = s s }'])
            # other calls went on while one waited: the loop is never blocked by a sandbox
            slow = asyncio.create_task(sandbox.run(["sleep", "2"]))
            fast = await sandbox.run(["echo", "fast"])
            assert fast.stdout == b"fast\n" and not slow.done()
            assert (await slow).returncode == 0

    asyncio.run(scenario())
    assert vm_dirs(vm_root) == []


def test_the_sandbox_timeout_fails_a_waiting_run(vm_root: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(SandboxTimeoutError):
            async with AsyncSandbox(timeout=4) as sandbox:
                await sandbox.run(["sleep", "600"])

    asyncio.run(scenario())
    assert vm_dirs(vm_root) == []


def test_an_exception_in_the_async_with_block_tears_the_vm_down(vm_root: Path) -> None:
    async def scenario() -> None:
        async with AsyncSandbox() as sandbox:
            await sandbox.run(["true"])
            assert vm_dirs(vm_root)
            raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        asyncio.run(scenario())
    assert vm_dirs(vm_root) == []


def test_ten_sandboxes_in_parallel_from_asyncio(vm_root: Path) -> None:
    async def one(index: int) -> tuple[int, bytes]:
        async with AsyncSandbox(memory_mib=64) as sandbox:
            result = await sandbox.run(["sh", "-c", "echo $0; cat /proc/sys/kernel/random/"
                                        "boot_id", str(index)], check=True, timeout=600)
            return index, result.stdout

    async def scenario() -> list[tuple[int, bytes]]:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(PARALLEL))), 900)

    results = asyncio.run(scenario())
    assert [index for index, _ in results] == list(range(PARALLEL))
    assert all(out.split()[0] == str(index).encode() for index, out in results)
    assert len({out.split()[1] for _, out in results}) == PARALLEL
    assert vm_dirs(vm_root) == []
