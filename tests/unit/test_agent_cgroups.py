"""OCI resources to cgroup v2 files, with runc's conversion rules, and the cgroup's own files.

`Cgroup` is exercised against a directory laid out like a cgroup (the kernel's files are plain
files there), so what it writes and how it parses memory.events and the stat files are checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon.agent import cgroups


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (0, 0)])
def test_cpu_shares_to_weight(shares: int, weight: int) -> None:
    assert cgroups.shares_to_weight(shares) == weight


def test_memory_limit_and_swap() -> None:
    out = cgroups.v2_settings({"memory": {"limit": 64 << 20, "swap": 96 << 20,
                                          "reservation": 16 << 20}})
    assert out == {"memory.max": str(64 << 20), "memory.swap.max": str(32 << 20),
                   "memory.low": str(16 << 20)}
    assert cgroups.v2_settings({"memory": {"limit": -1, "swap": -1}}) == {
        "memory.max": "max", "memory.swap.max": "max"}


def test_cpu_quota_period_and_sets() -> None:
    out = cgroups.v2_settings({"cpu": {"quota": 50000, "period": 100000, "shares": 512,
                                       "cpus": "0-1", "mems": "0"}})
    assert out == {"cpu.max": "50000 100000", "cpu.weight": "20", "cpuset.cpus": "0-1",
                   "cpuset.mems": "0"}
    assert cgroups.v2_settings({"cpu": {"period": 20000}}) == {"cpu.max": "max 20000"}
    assert cgroups.v2_settings({"cpu": {"quota": 30000}}) == {"cpu.max": "30000"}
    assert cgroups.v2_settings({"cpu": {"quota": -1, "period": 50000}}) == {
        "cpu.max": "max 50000"}


def test_zero_quota_and_period_are_left_alone() -> None:
    """What `docker update -m 128m` sends beside the memory: zeros for the cpu it leaves alone
    (written as "0 100000", the kernel refused it and the update failed)."""
    zeros = {"cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""},
             "memory": {"limit": 128 << 20, "swap": 256 << 20}}
    assert cgroups.v2_settings(zeros) == {"memory.max": str(128 << 20),
                                          "memory.swap.max": str(128 << 20)}


def test_pids_and_unified() -> None:
    assert cgroups.v2_settings({"pids": {"limit": 0}}) == {"pids.max": "max"}
    assert cgroups.v2_settings({"pids": {"limit": 20}}) == {"pids.max": "20"}
    assert cgroups.v2_settings({"unified": {"memory.high": "100M"}}) == {"memory.high": "100M"}
    with pytest.raises(ValueError, match="unified"):
        cgroups.v2_settings({"unified": {"../escape": "1"}})


def test_nothing_asked_writes_nothing() -> None:
    assert cgroups.v2_settings({}) == {}
    assert cgroups.v2_settings({"memory": {"limit": 0}, "devices": [{"allow": False}]}) == {}


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory pids\n")
    return tmp_path


def test_create_enables_the_controllers_and_apply_writes(fake_root: Path) -> None:
    group = cgroups.Cgroup.create("c1", root=fake_root)
    assert group.path == fake_root / "cocoon" / "c1"
    assert (fake_root / "cocoon" / "cgroup.subtree_control").read_text() == \
        "+cpu +memory +pids"
    group.apply({"pids": {"limit": 7}, "cpu": {"quota": 1000, "period": 10000}})
    assert (group.path / "pids.max").read_text() == "7"
    assert (group.path / "cpu.max").read_text() == "1000 10000"


def test_oom_kills_and_stats_are_parsed(fake_root: Path) -> None:
    group = cgroups.Cgroup.create("c2", root=fake_root)
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    (group.path / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (group.path / "memory.current").write_text("4096\n")
    (group.path / "memory.max").write_text("max\n")
    (group.path / "pids.current").write_text("3\n")
    assert group.oom_kills() == 2
    stats = group.stats()
    assert stats["cpu.usage_usec"] == 1500
    assert stats["memory.current"] == 4096
    assert "memory.max" not in stats  # "max" is no number
    assert stats["pids.current"] == 3
    assert stats["memory.oom_kill"] == 2


def test_a_write_error_names_the_file(tmp_path: Path) -> None:
    group = cgroups.Cgroup(tmp_path / "missing")
    with pytest.raises(OSError) as caught:
        group.write("pids.max", "5")
    assert "pids.max=5" in str(caught.value)
