"""The agent's container statistics in the shape containerd expects from a shim's Stats.

The agent reports Kata's cgroup-v1-shaped `StatsContainerResponse` (CPU times in nanoseconds,
the guest's memory.stat entries in a map); `ctr task metrics` and the CRI plugin decode an Any of
`io.containerd.cgroups.v2.Metrics` (the guest runs cgroup v2). The figures are the guest's: they
describe the container inside the VM, not the VM's footprint on the host.
"""

from __future__ import annotations

from google.protobuf import any_pb2

from cocoon.protocols.gen import agent_pb2
from cocoon.protocols.gen import cgroups_v2_metrics_pb2 as v2

METRICS_TYPE_URL = "io.containerd.cgroups.v2.Metrics"
NS_PER_USEC = 1000
_MEMORY_FIELDS = frozenset(f.name for f in v2.MemoryStat.DESCRIPTOR.fields
                           if f.type == f.TYPE_UINT64)


def to_v2_metrics(stats: agent_pb2.StatsContainerResponse) -> v2.Metrics:
    cgroup = stats.cgroup_stats
    cpu = cgroup.cpu_stats
    memory_map = dict(cgroup.memory_stats.stats)
    memory = v2.MemoryStat()
    for key, value in memory_map.items():
        if key in _MEMORY_FIELDS:
            setattr(memory, key, value)
    memory.usage = cgroup.memory_stats.usage.usage or memory_map.get("current", 0)
    memory.usage_limit = cgroup.memory_stats.usage.limit or memory_map.get("max", 0)
    memory.swap_usage = cgroup.memory_stats.swap_usage.usage or memory_map.get("swap.current", 0)
    metrics = v2.Metrics(
        pids=v2.PidsStat(current=cgroup.pids_stats.current, limit=cgroup.pids_stats.limit),
        cpu=v2.CPUStat(
            usage_usec=cpu.cpu_usage.total_usage // NS_PER_USEC,
            user_usec=cpu.cpu_usage.usage_in_usermode // NS_PER_USEC,
            system_usec=cpu.cpu_usage.usage_in_kernelmode // NS_PER_USEC,
            nr_periods=cpu.throttling_data.periods,
            nr_throttled=cpu.throttling_data.throttled_periods,
            throttled_usec=cpu.throttling_data.throttled_time // NS_PER_USEC),
        memory=memory,
        memory_events=v2.MemoryEvents(oom_kill=memory_map.get("oom_kill", 0)),
    )
    for net in stats.network_stats:
        metrics.network.append(v2.NetworkStat(
            name=net.name, rx_bytes=net.rx_bytes, rx_packets=net.rx_packets,
            rx_errors=net.rx_errors, rx_dropped=net.rx_dropped, tx_bytes=net.tx_bytes,
            tx_packets=net.tx_packets, tx_errors=net.tx_errors, tx_dropped=net.tx_dropped))
    return metrics


def metrics_any(stats: agent_pb2.StatsContainerResponse) -> any_pb2.Any:
    """The Any a StatsResponse carries (type URL set by hand: containerd wants no prefix)."""
    return any_pb2.Any(type_url=METRICS_TYPE_URL,
                       value=to_v2_metrics(stats).SerializeToString())
