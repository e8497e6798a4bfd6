"""Host cgroups without a host: hierarchies from mountinfo, cgroupsPath as runc reads it, and
the spec's limits as file writes (with the VM's overhead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon.errors import ConfigError
from cocoon.hostcgroup import hierarchy
from cocoon.hostcgroup.path import CgroupPath, expand_slice, looks_systemd, resolve
from cocoon.hostcgroup.settings import (
    HOST_MEMORY_OVERHEAD,
    QEMU_DEVICES,
    TASK_OVERHEAD,
    v1_writes,
    v2_writes,
)
from cocoon.oci.spec import LinuxResources

MIB = 1 << 20

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 /kubepods /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 / /proc rw - proc proc rw
"""
PROC_CGROUP = "5:cpu,cpuacct:/\n4:memory:/a/b\n3:pids:/kubepods\n1:name=systemd:/\n0::/\n"


def test_hierarchies_are_matched_to_their_mounts() -> None:
    keys = set(hierarchy.parse_proc_cgroup(PROC_CGROUP))
    found = {h.key: h for h in hierarchy.parse_mountinfo(HYBRID_MOUNTINFO, keys)}
    assert set(found) == {"cpu,cpuacct", "memory", "pids", "name=systemd", ""}
    assert found["cpu,cpuacct"].controllers == {"cpu", "cpuacct"}
    assert found["name=systemd"].controllers == frozenset()
    assert found[""].version == 2 and found["memory"].version == 1
    assert found["memory"].directory("/x/y") == Path("/sys/fs/cgroup/memory/x/y")
    # a mount that shows a sub-tree (as in a container) maps paths below its root
    assert found["pids"].directory("/kubepods/pod1") == Path("/sys/fs/cgroup/pids/pod1")
    with pytest.raises(ValueError):
        found["pids"].directory("/elsewhere")


@pytest.mark.parametrize(("given", "expected"), [
    ("/kubepods/pod1/abc", CgroupPath("/kubepods/pod1/abc", relative=False)),
    ("/a/../../b", CgroupPath("/b", relative=False)),
    ("rel/x", CgroupPath("rel/x", relative=True)),
    ("../../up", CgroupPath("up", relative=True)),  # cannot climb out of the runtime's cgroup
    ("", CgroupPath("cid", relative=True)),  # the id, below the runtime's own cgroup
])
def test_cgroupfs_paths(given: str, expected: CgroupPath) -> None:
    assert resolve(given, "cid") == expected


def test_relative_paths_hang_below_the_runtimes_own() -> None:
    assert resolve("x", "cid").under("/a/b") == "/a/b/x"
    assert resolve("/x", "cid").under("/a/b") == "/x"


@pytest.mark.parametrize(("given", "expected"), [
    ("system.slice:cocoon:abc", "/system.slice/cocoon-abc.scope"),
    (":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"),
    ("kubepods-burstable-pod1.slice:cri:abc",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-abc.scope"),
    ("-.slice::abc", "/abc.scope"),
    ("machine.slice:x:my.slice", "/machine.slice/my.slice"),
])
def test_systemd_paths(given: str, expected: str) -> None:
    assert resolve(given, "cid", systemd=True) == CgroupPath(expected, relative=False)
    assert looks_systemd(given)


def test_systemd_default_and_bad_forms() -> None:
    assert resolve("", "cid", systemd=True).path == "/system.slice/cocoon-cid.scope"
    assert not looks_systemd("/kubepods/pod:1") and not looks_systemd("a/b")
    for bad in ("no-colons", "a.slice:b", "notaslice:p:n", "a--b.slice:p:n", "s.slice:p:"):
        with pytest.raises(ConfigError, match=r"linux\.cgroupsPath"):
            resolve(bad, "cid", systemd=True)
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"


def resources(data: dict[str, object]) -> LinuxResources:
    return LinuxResources.from_dict(data, "linux.resources")


def writes(data: dict[str, object], vm: int = 256 * MIB) -> dict[str, str]:
    return {w.file: w.value for w in v1_writes(resources(data), vm)}


def test_memory_is_bounded_by_the_vm_with_its_overhead() -> None:
    out = writes({"memory": {"limit": 64 * MIB, "swap": 128 * MIB, "reservation": 32 * MIB}})
    assert out["memory.limit_in_bytes"] == str(256 * MIB + HOST_MEMORY_OVERHEAD)
    assert out["memory.memsw.limit_in_bytes"] == str(256 * MIB + HOST_MEMORY_OVERHEAD)
    assert out["memory.soft_limit_in_bytes"] == str(32 * MIB)
    big = writes({"memory": {"limit": 2048 * MIB}}, vm=2176 * MIB)
    assert big["memory.limit_in_bytes"] == str(2176 * MIB + HOST_MEMORY_OVERHEAD)
    assert writes({"memory": {"limit": -1}})["memory.limit_in_bytes"] == "-1"
    assert writes({}) == {}  # no limit asked: nothing written, the parent's apply


def test_cpu_pids_blkio_hugetlb_network_as_runc_writes_them() -> None:
    out = writes({"cpu": {"shares": 512, "quota": 20000, "period": 50000, "cpus": "0-1",
                          "mems": "0"},
                  "pids": {"limit": 10},
                  "blockIO": {"weight": 300, "throttleReadBpsDevice": [
                      {"major": 8, "minor": 0, "rate": 1000}]},
                  "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                  "network": {"classID": 1048577, "priorities": [{"name": "eth0",
                                                                  "priority": 5}]}})
    assert out == {
        "cpu.shares": "512", "cpu.cfs_period_us": "50000", "cpu.cfs_quota_us": "20000",
        "cpuset.cpus": "0-1", "cpuset.mems": "0", "pids.max": str(10 + TASK_OVERHEAD),
        "blkio.weight": "300", "blkio.throttle.read_bps_device": "8:0 1000",
        "hugetlb.2MB.limit_in_bytes": "4194304", "net_cls.classid": "1048577",
        "net_prio.ifpriomap": "eth0 5"}
    ordered = [w.file for w in v1_writes(resources({"cpu": {"quota": 1, "period": 2}}), 0)]
    assert ordered == ["cpu.cfs_period_us", "cpu.cfs_quota_us"]  # the period first
    assert writes({"pids": {"limit": -1}})["pids.max"] == "max"


def test_device_rules_keep_their_order_and_qemu_keeps_its_devices() -> None:
    rules = [w for w in v1_writes(resources({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "b", "major": 8, "access": "r"}]}), 0)]
    lines = [(w.file, w.value) for w in rules]
    assert lines[:3] == [("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rw"),
                         ("devices.allow", "b 8:* r")]
    assert [value for _, value in lines[3:]] == list(QEMU_DEVICES)
    assert "c 10:232 rwm" in QEMU_DEVICES  # /dev/kvm
    assert not v1_writes(resources({}), 0)


def test_cgroup_v2_writes_share_the_guests_conversions() -> None:
    out = {w.file: w.value for w in v2_writes(resources({
        "memory": {"limit": 64 * MIB}, "cpu": {"shares": 1024, "quota": 50000},
        "pids": {"limit": 5},
        "blockIO": {"weight": 500, "throttleWriteIOPSDevice": [
            {"major": 8, "minor": 0, "rate": 100}]}}), 512 * MIB)}
    assert out["memory.max"] == str(512 * MIB + HOST_MEMORY_OVERHEAD)
    # no period: the kernel keeps its own (runc writes the quota alone)
    assert out["cpu.max"] == "50000" and out["cpu.weight"] == "39"
    assert out["pids.max"] == str(5 + TASK_OVERHEAD)
    assert out["io.weight"] == "default 4950" and out["io.max"] == "8:0 wiops=100"
