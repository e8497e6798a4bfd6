"""podman 4.3's `container checkpoint` and `container restore` with Cocoon as its runtime: podman
calls `cocoon checkpoint` and `cocoon restore` (through conmon) with runc's flags, and the
counter in the container goes on from where it stopped, in its logs.

podman checks the host's CRIU version (`criu swrk`) before it calls the runtime, even though
Cocoon's CRIU runs in the guest: without `criu` on the host it refuses ("checkpoint/restore
requires at least CRIU 31100"), and this test is skipped with that reason.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.sandbox.share import detach_all
from tests.integration.test_podman import IMAGE, ULIMITS, Podman

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
              pytest.mark.skipif(shutil.which("criu") is None,
                                 reason="podman checks the host's CRIU version before it "
                                        "checkpoints (Debian package criu)")]

COUNTER = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    from cocoon.guest import assets

    base = tmp_path_factory.mktemp("podman")
    (base / "tmp").mkdir()
    p = Podman(base, str(Path(sys.executable).parent / "cocoon"))
    p("load", "-i", str(assets.write_busybox_oci_archive(base / "busybox.tar")), check=True)
    yield p
    p("rm", "--all", "--force", timeout=300)
    detach_all(base)  # podman keeps its overlay store mounted


def logged(podman: Podman, name: str) -> list[int]:
    return [int(word) for word in podman("logs", name).stdout.split() if word.isdigit()]


def wait_logged(podman: Podman, name: str, count: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = logged(podman, name)
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{name} logged fewer than {count} numbers: {logged(podman, name)}")


def test_podman_checkpoint_and_restore_keep_counting(podman: Podman) -> None:
    name = "cocoon-ckpt"
    run = podman("run", "-d", "--name", name, *ULIMITS, IMAGE, "sh", "-c", COUNTER)
    assert run.returncode == 0, run.stderr
    try:
        wait_logged(podman, name, 5)
        podman("container", "checkpoint", name, check=True)
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "exited", state
        stopped_at = logged(podman, name)
        time.sleep(1.0)
        assert logged(podman, name) == stopped_at  # nothing counts any more
        podman("container", "restore", name, check=True)
        assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() == \
            "running"
        found = wait_logged(podman, name, len(stopped_at) + 3)
        # one log: the numbers before the checkpoint, then on from where it stopped (a line
        # written but not yet read by conmon at the dump may be lost with the old pipe)
        assert found[:len(stopped_at)] == stopped_at == list(range(1, len(stopped_at) + 1))
        resumed = found[len(stopped_at):]
        assert stopped_at[-1] < resumed[0] <= stopped_at[-1] + 2, (stopped_at, resumed)
        assert resumed == list(range(resumed[0], resumed[0] + len(resumed)))
    finally:
        podman("rm", "--force", name, timeout=300)
