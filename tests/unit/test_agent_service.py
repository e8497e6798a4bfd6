"""Pure helpers of the agent's service: share mounts to let go of, statistics conversion."""

from __future__ import annotations

from cocoon.agent import service

MOUNTINFO = """\
22 1 0:20 / /proc rw,nosuid - proc proc rw
30 22 0:27 / /run/cocoon/shared rw - virtiofs cocoon rw
31 30 0:28 / /run/cocoon/shared/c1/rootfs ro - virtiofs cocoon rw
32 30 0:29 / /run/cocoon/shared/c1/mounts/0 rw - virtiofs cocoon rw
33 30 0:30 / /run/cocoon/shared/c10/rootfs rw - virtiofs cocoon rw
34 31 0:31 / /run/cocoon/shared/c1/rootfs/with\\040space rw - virtiofs cocoon rw
"""


def test_mounts_of_one_container_nested_before_their_parents() -> None:
    found = service.guest_mounts_under("/run/cocoon/shared/c1", MOUNTINFO)
    assert sorted(found) == ["/run/cocoon/shared/c1/mounts/0",  # and not c10's
                             "/run/cocoon/shared/c1/rootfs",
                             "/run/cocoon/shared/c1/rootfs/with space"]
    assert found.index("/run/cocoon/shared/c1/rootfs/with space") < \
        found.index("/run/cocoon/shared/c1/rootfs")


def test_cgroup_stats_are_converted_to_katas_units() -> None:
    stats = service._cgroup_stats({"cpu.usage_usec": 3, "cpu.user_usec": 2,
                                   "cpu.system_usec": 1, "memory.current": 4096,
                                   "memory.max": 8192, "memory.oom_kill": 1,
                                   "memory.anon": 100, "pids.current": 4, "pids.max": 20})
    assert stats.cpu_stats.cpu_usage.total_usage == 3000  # nanoseconds
    assert stats.memory_stats.usage.usage == 4096
    assert stats.memory_stats.usage.limit == 8192
    assert stats.memory_stats.stats["oom_kill"] == 1
    assert stats.memory_stats.stats["anon"] == 100
    assert (stats.pids_stats.current, stats.pids_stats.limit) == (4, 20)
