"""containerd 1.6 checkpointing a Cocoon task through the shim's Checkpoint RPC, and restoring
it from the checkpoint image it stored: `ctr containers checkpoint --task --image` (the task's
checkpoint, as `ctr task checkpoint` makes it, stored beside the container's image and spec),
then `ctr containers restore --live` (a task created with the checkpoint, started).

containerd sends runc's checkpoint options only to runc's runtime names, so for Cocoon's the
task keeps running after the checkpoint (runc's shim default); the test then kills and removes
it, so that what counts after the restore can only come from the checkpoint.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework.leaks import LeakCheck
from tests.integration.containerd_env import (
    BUSYBOX,
    RUNTIME,
    Containerd,
    busybox_containerd,
)

pytestmark = [pytest.mark.integration, pytest.mark.vm,
              pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                                 reason="containerd is not installed")]

REF = "localhost/ck1-checkpoint:1"
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"


@pytest.fixture
def leak_check() -> None:
    """Replaces the suite's leak check: the module's containerd fixture checks its own."""


@pytest.fixture(scope="module")
def ctrd() -> Iterator[Containerd]:
    yield from busybox_containerd()


@pytest.fixture
def leaks(ctrd: Containerd) -> Iterator[LeakCheck]:
    yield from ctrd.checked()


def ctr(ctrd: Containerd, *args: str) -> subprocess.CompletedProcess[str]:
    return ctrd.ctr(*args, check=False)


def count(ctrd: Containerd, name: str, exec_id: str) -> int:
    """The counter's file, read in the container (caught between the shell's truncate and
    write, it is empty: read again)."""
    for attempt in range(5):
        result = ctr(ctrd, "task", "exec", "--exec-id", f"{exec_id}-{attempt}", name,
                     "cat", "/tmp/count")
        assert result.returncode == 0, result.stderr + ctrd.log_tail()
        if result.stdout.strip():
            return int(result.stdout.strip())
    raise AssertionError(f"{name}: /tmp/count stays empty")


def wait_for_count(ctrd: Containerd, name: str, least: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    for attempt in range(1000):
        found = count(ctrd, name, f"w{attempt}")
        if found >= least or time.monotonic() > deadline:
            return found
        time.sleep(1.0)
    return found


def remove(ctrd: Containerd, name: str) -> None:
    ctr(ctrd, "task", "kill", "-s", "KILL", name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "STOPPED" not in ctr(ctrd, "task", "ls").stdout:
        time.sleep(0.2)
    ctr(ctrd, "task", "delete", name)
    ctr(ctrd, "container", "delete", name)


def test_task_checkpoint_then_restore_keeps_counting(ctrd: Containerd,
                                                     leaks: LeakCheck) -> None:
    name = "ck1"
    unpacked_before = set(Path("/tmp").glob("ctrd-checkpoint*"))
    run = ctr(ctrd, "run", "-d", "--null-io", "--runtime", RUNTIME, BUSYBOX, name,
              "sh", "-c", COUNTER)
    assert run.returncode == 0, run.stderr + ctrd.log_tail()
    try:
        before = wait_for_count(ctrd, name, 25)
        started = time.monotonic()
        # the task's checkpoint (the shim's Checkpoint RPC) with the container's image and
        # spec, so that `containers restore` can make the container again
        checkpoint = ctr(ctrd, "containers", "checkpoint", "--task", "--image", name, REF)
        assert checkpoint.returncode == 0, checkpoint.stderr + ctrd.log_tail()
        print(f"ctr containers checkpoint --task took {time.monotonic() - started:.2f} s")
        assert count(ctrd, name, "c1") >= before  # still running (no --exit for this runtime)
        remove(ctrd, name)
        assert name not in ctr(ctrd, "task", "ls").stdout

        started = time.monotonic()
        restore = ctr(ctrd, "containers", "restore", "--live", name, REF)
        assert restore.returncode == 0, restore.stderr + ctrd.log_tail()
        print(f"ctr containers restore --live took {time.monotonic() - started:.2f} s")
        restored = time.monotonic()
        assert "RUNNING" in ctr(ctrd, "task", "ls").stdout
        first = count(ctrd, name, "r0")
        since_restore = time.monotonic() - restored
        time.sleep(1.0)
        later = count(ctrd, name, "r1")
        # the rootfs is a fresh snapshot of the image: the number comes from the restored
        # shell's memory. A counter started afresh could not have passed `before` yet.
        assert since_restore / 0.2 < before, since_restore
        assert first > before, (first, before)
        assert later > first
    finally:
        remove(ctrd, name)
        ctr(ctrd, "image", "rm", "--sync", REF)
        # containerd 1.6 leaves the directory it unpacked the checkpoint into ($TMPDIR)
        for left in set(Path("/tmp").glob("ctrd-checkpoint*")) - unpacked_before:
            shutil.rmtree(left, ignore_errors=True)
