"""The agent's statistics as the cgroup v2 Metrics that `ctr task metrics` decodes."""

from __future__ import annotations

from cocoon.protocols.gen import agent_pb2
from cocoon.protocols.gen import cgroups_v2_metrics_pb2 as v2
from cocoon.shim.metrics import METRICS_TYPE_URL, metrics_any, to_v2_metrics


def _stats() -> agent_pb2.StatsContainerResponse:
    return agent_pb2.StatsContainerResponse(
        cgroup_stats=agent_pb2.CgroupStats(
            cpu_stats=agent_pb2.CpuStats(
                cpu_usage=agent_pb2.CpuUsage(total_usage=5_000_000, usage_in_usermode=3_000_000,
                                             usage_in_kernelmode=2_000_000),
                throttling_data=agent_pb2.ThrottlingData(periods=10, throttled_periods=2,
                                                         throttled_time=7_000)),
            memory_stats=agent_pb2.MemoryStats(
                usage=agent_pb2.MemoryData(usage=4096, limit=1 << 20),
                stats={"anon": 100, "file": 200, "pgfault": 9, "oom_kill": 1, "current": 4096,
                       "not_a_field": 5}),
            pids_stats=agent_pb2.PidsStats(current=3, limit=64)),
        network_stats=[agent_pb2.NetworkStats(name="eth0", rx_bytes=10, tx_bytes=20)])


def test_units_and_fields_follow_cgroup_v2() -> None:
    metrics = to_v2_metrics(_stats())
    assert (metrics.cpu.usage_usec, metrics.cpu.user_usec, metrics.cpu.system_usec) == \
        (5000, 3000, 2000)
    assert (metrics.cpu.nr_periods, metrics.cpu.nr_throttled, metrics.cpu.throttled_usec) == \
        (10, 2, 7)
    assert (metrics.memory.usage, metrics.memory.usage_limit) == (4096, 1 << 20)
    assert (metrics.memory.anon, metrics.memory.file, metrics.memory.pgfault) == (100, 200, 9)
    assert metrics.memory_events.oom_kill == 1
    assert (metrics.pids.current, metrics.pids.limit) == (3, 64)
    assert [(n.name, n.rx_bytes, n.tx_bytes) for n in metrics.network] == [("eth0", 10, 20)]


def test_memory_usage_falls_back_to_the_stat_map() -> None:
    stats = agent_pb2.StatsContainerResponse(cgroup_stats=agent_pb2.CgroupStats(
        memory_stats=agent_pb2.MemoryStats(stats={"current": 77, "max": 99})))
    metrics = to_v2_metrics(stats)
    assert (metrics.memory.usage, metrics.memory.usage_limit) == (77, 99)


def test_any_has_the_bare_type_url_containerd_resolves() -> None:
    packed = metrics_any(_stats())
    assert packed.type_url == METRICS_TYPE_URL == v2.Metrics.DESCRIPTOR.full_name
    assert v2.Metrics.FromString(packed.value).pids.current == 3
