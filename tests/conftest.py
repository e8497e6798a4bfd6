"""Fixtures shared by every tier; the framework behind them is documented in tests/framework.

Every test marked `vm` or `integration`, and every test that uses `vm_root`, `state_root` or
`sandboxes`, runs with a private VM root and ends with the leak check: a test that leaves a
QEMU, virtiofsd, monitor or shim process, a mount or a sandbox directory behind fails (at
teardown, with the list), after what it left has been cleaned up.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.cli.context import DEFAULT_ROOT
from cocoon.sandbox.layout import DEFAULT_VM_ROOT
from tests.framework.leaks import LeakCheck
from tests.framework.sandbox import Sandboxes

LEAK_CHECKED_MARKERS = ("vm", "integration")
LEAK_CHECKED_FIXTURES = ("vm_root", "state_root", "sandboxes")
QEMU = "qemu-system-x86_64"


@functools.cache
def qemu_problem() -> str | None:
    """Why VMs cannot boot on this host at all, or None (KVM is optional: TCG suffices)."""
    binary = shutil.which(QEMU)
    if binary is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86)"
    try:
        accels = subprocess.run([binary, "-accel", "help"], capture_output=True, text=True,
                                timeout=60, check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{binary} -accel help failed: {err}"
    if "tcg" not in accels and not ("kvm" in accels and os.path.exists("/dev/kvm")):
        return f"{binary} offers neither TCG nor a usable KVM (accelerators: {accels})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    vm_items = [item for item in items if item.get_closest_marker("vm")]
    if not vm_items:
        return
    problem = qemu_problem()
    if problem is not None:
        skip = pytest.mark.skip(reason=f"VM tests need QEMU: {problem}")
        for item in vm_items:
            item.add_marker(skip)


def _short_tmpdir(prefix: str) -> Path:
    # unix socket paths are limited to 107 bytes: keep sandbox directories near the root
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture
def vm_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private VM root for this test; COCOON_VM_DIR points at it while the test runs."""
    root = _short_tmpdir("cvm-")
    monkeypatch.setenv("COCOON_VM_DIR", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[LeakCheck | None]:
    """Fails the test if its sandboxes left anything behind (see tests/framework/leaks.py)."""
    node = request.node
    wanted = any(node.get_closest_marker(m) for m in LEAK_CHECKED_MARKERS) or \
        any(name in request.fixturenames for name in LEAK_CHECKED_FIXTURES)
    if not wanted:
        yield None
        return
    root: Path = request.getfixturevalue("vm_root")
    # engines (podman, containerd) do not pass our environment on: their sandboxes (and, for
    # podman and Docker, the runtime's state) land in the default roots, where only what
    # appears during the test is this test's
    shared = [DEFAULT_VM_ROOT, DEFAULT_ROOT] if node.get_closest_marker("integration") else []
    check = LeakCheck(private=[root], shared=shared)
    yield check
    report = check.check()
    for state_root in check.state_roots:
        shutil.rmtree(state_root, ignore_errors=True)
    if report:
        pytest.fail(f"the test left behind: {report}", pytrace=False)


@pytest.fixture
def state_root(leak_check: LeakCheck) -> Path:
    """A fresh runtime state root; the leak check fails the test if a directory is left in it."""
    root = _short_tmpdir("cst-")
    leak_check.watch_state_root(root)
    return root


@pytest.fixture
def sandboxes(leak_check: LeakCheck) -> Iterator[Sandboxes]:
    """Boot sandboxes with `sandboxes.boot(id, **config)`; every one is stopped at the end."""
    booted = Sandboxes()
    yield booted
    booted.stop_all()
