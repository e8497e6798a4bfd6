"""The leak check finds, cleans and reports what a scenario left, and only that.

Real processes, a real bind mount and real directories stand in for a sandbox's leftovers (no VM
needed): a process is the test's when it descends from the test process or points into a
watched root, whatever its name.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.linux import syscalls as sc
from cocoon.sandbox import pool
from tests.framework.leaks import LeakCheck, mounts_under, processes
from tests.framework.sandbox import pid_alive


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cleak-", dir="/tmp"))
    yield path
    for target in mounts_under([path]):
        sc.umount2(target, sc.MNT_DETACH)
    shutil.rmtree(path, ignore_errors=True)


def sleeper(cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"], cwd=cwd, start_new_session=True)


def test_a_clean_scenario_reports_nothing(root: Path) -> None:
    check = LeakCheck(private=[root])
    assert not check.check(settle=0.5)


def test_a_process_tied_to_the_root_is_found_killed_and_reported(root: Path) -> None:
    check = LeakCheck(private=[root])
    (root / "vm").mkdir()
    proc = sleeper(cwd=root / "vm")
    report = check.check(settle=0.5)
    assert [p.pid for p in report.processes] == [proc.pid]
    assert report.paths == [root / "vm"]
    assert not pid_alive(proc.pid)  # killed and reaped by the check
    proc.returncode = -9
    assert list(root.iterdir()) == []
    assert "pid" in str(report) and str(root / "vm") in str(report)


def test_a_mount_under_the_root_is_found_and_detached(root: Path) -> None:
    check = LeakCheck(private=[root])
    source, target = root.parent / f"{root.name}-src", root / "vm" / "shared"
    source.mkdir()
    target.mkdir(parents=True)
    try:
        sc.mount(str(source), str(target), None, sc.MS_BIND)
        report = check.check(settle=0.2)
        assert report.mounts == [str(target)]
        assert mounts_under([root]) == []
        assert not check.find()
    finally:
        shutil.rmtree(source)


def test_what_existed_before_is_not_counted(root: Path) -> None:
    earlier = sleeper(cwd=root)
    try:
        check = LeakCheck(private=[root])
        assert check.find().processes == []
    finally:
        earlier.kill()
        earlier.wait()


def test_a_descendant_qemu_counts_wherever_it_runs(root: Path, tmp_path: Path) -> None:
    """A descendant is ours by ancestry; its name says it is one of the watched kinds."""
    fake = tmp_path / "qemu-system-x86_64"
    fake.symlink_to(shutil.which("sleep") or "/bin/sleep")
    check = LeakCheck(private=[root])
    proc = subprocess.Popen([str(fake), "300"])
    plain = subprocess.Popen(["sleep", "300"])  # a descendant of no watched kind: not ours
    try:
        found = check.find().processes
        assert [(p.pid, p.kind) for p in found] == [(proc.pid, "qemu")]
        check.clean()
        assert not pid_alive(proc.pid)
        proc.returncode = -9
        assert plain.poll() is None
    finally:
        plain.kill()
        plain.wait()


def test_fresh_entries_of_a_shared_root_count_and_are_not_killed(root: Path) -> None:
    (root / "theirs").mkdir()
    check = LeakCheck(shared=[root])
    (root / "mine").mkdir()
    proc = sleeper(cwd=root / "mine")
    try:
        report = check.check(settle=0.2)
        assert [p.pid for p in report.processes] == [proc.pid]
        assert report.paths == [root / "mine"]
        assert pid_alive(proc.pid)  # not provably ours: reported, not killed
        assert sorted(p.name for p in root.iterdir()) == ["theirs"]
    finally:
        proc.kill()
        proc.wait()


def test_the_pools_fresh_clones_in_a_shared_root_are_not_leaks(root: Path) -> None:
    check = LeakCheck(shared=[root])
    member = root / "0123456789abcdef"
    member.mkdir()
    (member / pool.MARKER).write_text('{"template": "t"}')
    (root / pool.INDEX / "t").mkdir(parents=True)
    proc = sleeper(cwd=member)
    try:
        assert not check.check(settle=0.2)
        assert pid_alive(proc.pid)
        (member / pool.MARKER).unlink()  # claimed: now a sandbox like any other
        assert check.find().paths == [member]
    finally:
        proc.kill()
        proc.wait()


def test_a_state_root_may_keep_files_but_no_directory(root: Path) -> None:
    check = LeakCheck(state_roots=[root])
    (root / "lock").write_text("")
    assert not check.find()
    (root / "c1").mkdir()
    assert check.find().paths == [root / "c1"]


def test_exited_children_are_reaped(root: Path) -> None:
    check = LeakCheck(private=[root])
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while not any(p.pid == proc.pid and p.state == "Z" for p in processes()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    check.reap_children()
    assert not any(p.pid == proc.pid for p in processes())
    proc.returncode = 0  # reaped by the check, not by Popen
