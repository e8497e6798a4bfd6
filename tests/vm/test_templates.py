"""Templates with real VMs: clones are separate machines, and a template is trusted only whole.

Each test keeps its templates in a private directory (`COCOON_TEMPLATE_DIR`), so what it
builds, breaks and counts is its own; sandboxes boot through the launcher, as the runtime's do,
and run containers through the agent API (tests/vm/container_kit.py). The leak check proves
that no clone, template VM, mount or directory is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from cocoon.guest import assets
from cocoon.protocols.gen import agent_pb2
from cocoon.template import store
from tests.framework.qemuuser import as_qemu, assert_cannot_read, assert_runs_as_its_own_user
from tests.vm.container_kit import GuestSandbox, Result, container_spec, without_namespace

pytestmark = pytest.mark.vm

# what a clone's container reports about the guest it runs in
PROBE = ("head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; "
         "date +%s; hostname; cat /guest-proc/[0-9]*/cmdline | tr '\\0' ' '")


@pytest.fixture
def template_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Templates private to the test, built on first use (the policy under TCG); the
    monitors the test starts inherit the environment."""
    path = tmp_path / "templates"
    monkeypatch.setenv(store.ENV_DIR, str(path))
    monkeypatch.setenv("COCOON_TEMPLATES", "on")
    return path


@pytest.fixture
def sandboxes(vm_root: Path) -> Iterator[list[GuestSandbox]]:
    started: list[GuestSandbox] = []
    yield started
    for sandbox in started:
        sandbox.stop()


def start(started: list[GuestSandbox], vm_root: Path, name: str, **config: Any
          ) -> GuestSandbox:
    sandbox = GuestSandbox(vm_root, name, **config)
    started.append(sandbox)
    sandbox.start()
    return sandbox


def start_clone(started: list[GuestSandbox], vm_root: Path, name: str, **config: Any
                ) -> GuestSandbox:
    """A sandbox restored from the template. A clone that fails falls back to a cold boot (its
    monitor logs why); on a host loaded enough for that, a second start is tried before the
    test gives up, since what it checks needs a clone."""
    for attempt in range(2):
        sandbox = start(started, vm_root, f"{name}-{attempt}", **config)
        if sandbox.info["started_from"].startswith("template"):
            return sandbox
        log = sandbox.layout.monitor_log.read_text(errors="replace")[-1500:]
        sandbox.stop()
    raise AssertionError(f"{name}: twice a cold boot instead of a clone: {log}")


def templates(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def probe(sandbox: GuestSandbox, container_id: str) -> list[str]:
    # the guest's own hostname (no uts namespace of the container's own) and processes (the
    # guest's /proc, bound in from the guest)
    spec = container_spec(["sh", "-c", PROBE], without_namespace("uts"))
    result: Result = sandbox.run_sync(container_id, spec,
                                      guest_binds=[("/proc", "/guest-proc")])
    assert result.status == 0, result.err
    return result.out.splitlines()


def test_two_clones_of_one_template_are_separate_machines(template_dir: Path, vm_root: Path,
                                                          sandboxes: list[GuestSandbox]) -> None:
    first = start_clone(sandboxes, vm_root, "one", hostname="clone-one")
    second = start_clone(sandboxes, vm_root, "two", hostname="clone-two")
    assert len(templates(template_dir)) == 1
    name = templates(template_dir)[0]
    assert first.info["started_from"] == second.info["started_from"] == f"template {name}"
    assert first.info["boot_id"] != second.info["boot_id"]

    async def keep_busy() -> None:
        # a process of the first clone's, live in its guest RAM, while the second is probed
        client = await first.connect()
        try:
            spec = container_spec(["sleep", "4242"])
            await first.create(client, "busy", spec)
            await first.call(client, "StartContainer", _start("busy"))
        finally:
            await client.close()

    asyncio.run(keep_busy())
    one, two = probe(first, "p1"), probe(second, "p2")
    now = time.time()
    random_one, clock_one, host_one = one[0], int(one[1]), one[2]
    random_two, clock_two, host_two = two[0], int(two[1]), two[2]
    assert re.fullmatch(r"[0-9a-f]{64}", random_one) and re.fullmatch(r"[0-9a-f]{64}",
                                                                      random_two)
    assert random_one != random_two
    assert abs(clock_one - now) <= 60 and abs(clock_two - now) <= 60  # (exactly: below)
    assert (host_one, host_two) == ("clone-one", "clone-two")
    assert any("sleep 4242" in line for line in probe(first, "p3"))
    assert not any("sleep 4242" in line for line in two)


def test_clones_do_not_see_each_others_guest_files(template_dir: Path, vm_root: Path,
                                                  sandboxes: list[GuestSandbox]) -> None:
    first = start_clone(sandboxes, vm_root, "files1")
    second = start_clone(sandboxes, vm_root, "files2")
    assert first.info["started_from"] == second.info["started_from"]

    async def write_in_first() -> None:
        client = await first.connect()
        try:  # a file in the first guest's own /run/cocoon (its RAM), not in any share
            await client.agent.call("CopyFile", agent_pb2.CopyFileRequest(
                path="/run/cocoon/first-only", file_size=6, file_mode=0o644, dir_mode=0o755,
                data=b"secret"), empty_pb2.Empty)
        finally:
            await client.close()

    asyncio.run(write_in_first())
    look = container_spec(["ls", "/guest-run"])
    seen_first = first.run_sync("look1", look, guest_binds=[("/run/cocoon", "/guest-run")])
    seen_second = second.run_sync("look2", look, guest_binds=[("/run/cocoon", "/guest-run")])
    assert seen_first.status == seen_second.status == 0, seen_first.err + seen_second.err
    assert "first-only" in seen_first.out.split()
    assert "first-only" not in seen_second.out.split()


def test_a_clones_qemu_cannot_reach_its_template_or_another_clone(
        template_dir: Path, vm_root: Path, sandboxes: list[GuestSandbox]) -> None:
    """Each clone's QEMU is a user of its own holding a private copy of the template's RAM
    (with a share or without): from where and as it runs, the template's files, the other
    clone's directory and the host's files cannot be read, and the template stays root's."""
    first = start_clone(sandboxes, vm_root, "user1")
    # ready means restored, resumed and answered by its agent
    second = start_clone(sandboxes, vm_root, "user2", share=False)
    name = templates(template_dir)[0]
    ram = template_dir / name / store.RAM
    for sandbox, other in ((first, second), (second, first)):
        pid = int(sandbox.info["qemu_pid"])
        assert_runs_as_its_own_user(pid)
        assert_cannot_read(pid, ram, template_dir / name / store.STATE, "/etc/shadow",
                           other.layout.qemu_dir / "console.log", sandbox.layout.config)
        mine = as_qemu(pid, "/usr/bin/test", "-O", str(sandbox.layout.qemu_dir / "qmp.sock"))
        assert mine.returncode == 0, mine.stderr
    for path in (template_dir / name).iterdir():
        assert (path.stat().st_uid, path.stat().st_mode & 0o022) == (0, 0), path


def _start(container_id: str) -> object:
    return agent_pb2.StartContainerRequest(container_id=container_id)


def test_a_clone_gets_the_host_clock_right_after_restore(template_dir: Path, vm_root: Path,
                                                         sandboxes: list[GuestSandbox]) -> None:
    start(sandboxes, vm_root, "warm")  # builds the template: its clock is now in the past
    time.sleep(3)
    clone = start_clone(sandboxes, vm_root, "late")
    before = time.time()
    lines = probe(clone, "clock")
    after = time.time()
    assert before - 1 <= int(lines[1]) <= after + 1


def test_a_changed_guest_image_gets_a_template_of_its_own(template_dir: Path, vm_root: Path,
                                                          sandboxes: list[GuestSandbox]) -> None:
    plain = start(sandboxes, vm_root, "plain")
    variant = assets.ensure_guest_image(extra_files={"etc/cocoon-variant": b"variant\n"})
    other = start(sandboxes, vm_root, "variant", initrd=str(variant.initrd))
    built = templates(template_dir)
    assert len(built) == 2
    assert plain.info["started_from"] != other.info["started_from"]
    digests = {json.loads((template_dir / name / store.META).read_text())["spec"]
               ["image_digest"] for name in built}
    assert variant.digest in digests and len(digests) == 2


@pytest.mark.parametrize("damage", ["truncate-ram", "delete-state", "corrupt-state"])
def test_a_damaged_template_means_a_cold_boot_with_a_warning(
        damage: str, template_dir: Path, vm_root: Path,
        sandboxes: list[GuestSandbox]) -> None:
    start(sandboxes, vm_root, "builder")
    (name,) = templates(template_dir)
    path = template_dir / name
    if damage == "truncate-ram":
        os.truncate(path / store.RAM, 4096)
    elif damage == "delete-state":
        (path / store.STATE).unlink()
    else:
        data = bytearray((path / store.STATE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (path / store.STATE).write_bytes(bytes(data))
    cold = start(sandboxes, vm_root, "cold")
    assert cold.info["started_from"] == "cold boot"
    log = cold.layout.monitor_log.read_text()
    assert re.search(rf"WARNING .*boots cold: template {name}", log), log[-2000:]
    assert probe(cold, "works")[2]  # a working sandbox, not a broken one
    assert templates(template_dir) == []  # the damaged one is gone ...
    again = start_clone(sandboxes, vm_root, "again")  # ... the next sandbox builds it anew
    assert again.info["started_from"] == f"template {name}"


def test_two_sandboxes_at_once_build_the_template_once(template_dir: Path, vm_root: Path,
                                                       sandboxes: list[GuestSandbox]) -> None:
    pair = [GuestSandbox(vm_root, f"race{i}") for i in range(2)]
    sandboxes.extend(pair)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda sandbox: sandbox.start(), pair))
    (name,) = templates(template_dir)
    logs = [sandbox.layout.monitor_log.read_text() for sandbox in pair]
    assert {sandbox.info["started_from"] for sandbox in pair} == {f"template {name}"}, logs
    builds = [log for log in logs if "building template" in log]
    assert len(builds) == 1
