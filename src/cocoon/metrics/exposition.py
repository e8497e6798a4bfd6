"""Cocoon's metrics in Prometheus' text format, with prometheus_client.

Every scrape reads every sandbox under the VM root afresh (`sample.sample_all`); what must
outlive one scrape is kept here: the agent's latency histogram and the count of sandbox starts
by where they came from (a cold boot, a template, the warm pool), counted once per guest boot
this process has seen.

Series (labels: `sandbox` = the sandbox id, which is the pod id for CRI pods and the container
id for a container of its own, plus `kube_namespace` and `kube_pod` when CRI annotated them):

- `cocoon_sandboxes{state}`: sandboxes on this host by their monitor's state
- `cocoon_sandbox_info{sandbox, started_from, accel, kube_namespace, kube_pod}` = 1
- `cocoon_sandbox_process_cpu_seconds_total{sandbox, process}`: QEMU, virtiofsd, the monitor
- `cocoon_sandbox_process_resident_bytes{sandbox, process}`
- `cocoon_sandbox_phase_seconds{sandbox, phase}`: the start's phases, from the monitor
- `cocoon_guest_memory_total_bytes`, `cocoon_guest_memory_available_bytes{sandbox}`
- `cocoon_guest_cpu_seconds_total{sandbox, mode}`: user, system, idle
- `cocoon_guest_load1`, `cocoon_guest_load5`, `cocoon_guest_load15{sandbox}`
- `cocoon_agent_rpc_seconds{method}`: histogram of the agent calls made for the metrics
- `cocoon_sandbox_starts_total{source}`: cold, template, pool
- `cocoon_scrape_errors_total`: sandboxes that did not answer a reading
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cocoon.metrics.labels import LABELS
from cocoon.metrics.sample import SandboxSample, sample_all

STATES = ("booting", "pooled", "running", "stopping", "unreachable")
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def start_source(started_from: str) -> str:
    if started_from.startswith("pool"):
        return "pool"
    if started_from.startswith("template"):
        return "template"
    return "cold"


class SandboxCollector(Collector):
    def __init__(self, vm_root: Path, registry: CollectorRegistry) -> None:
        self.vm_root = vm_root
        self.rpc = Histogram("cocoon_agent_rpc_seconds", "agent calls made for the metrics",
                             ["method"], buckets=RPC_BUCKETS, registry=registry)
        self.starts = Counter("cocoon_sandbox_starts", "sandbox starts by where they came from",
                              ["source"], registry=registry)
        self.errors = Counter("cocoon_scrape_errors", "sandboxes that did not answer a reading",
                              registry=registry)
        for source in ("cold", "template", "pool"):
            self.starts.labels(source)  # present at 0 before the first start
        self._seen: set[tuple[str, str]] = set()

    def collect(self) -> Iterator[Metric]:
        samples = asyncio.run(sample_all(self.vm_root))
        for sample in samples:
            for method, seconds in sample.rpc_seconds.items():
                self.rpc.labels(method).observe(seconds)
            if sample.error:
                self.errors.inc()
            if sample.boot_id and (sample.sandbox_id, sample.boot_id) not in self._seen \
                    and sample.state in ("running", "pooled"):
                self._seen.add((sample.sandbox_id, sample.boot_id))
                self.starts.labels(start_source(sample.started_from)).inc()
        yield from families(samples)


def families(samples: list[SandboxSample]) -> Iterator[Metric]:
    label_names = ["sandbox", *LABELS]

    def ids(sample: SandboxSample) -> list[str]:
        return [sample.sandbox_id, *(sample.labels.get(name, "") for name in LABELS)]

    states = GaugeMetricFamily("cocoon_sandboxes", "sandboxes by state", labels=["state"])
    for state in STATES:
        states.add_metric([state], sum(1 for s in samples if s.state == state))
    yield states

    info = GaugeMetricFamily("cocoon_sandbox_info", "one per sandbox",
                             labels=[*label_names, "started_from", "accel"])
    cpu = CounterMetricFamily("cocoon_sandbox_process_cpu_seconds",
                              "CPU time of the sandbox's host processes",
                              labels=[*label_names, "process"])
    rss = GaugeMetricFamily("cocoon_sandbox_process_resident_bytes",
                            "resident memory of the sandbox's host processes",
                            labels=[*label_names, "process"])
    phases = GaugeMetricFamily("cocoon_sandbox_phase_seconds",
                               "seconds from the monitor's start to each phase of the start",
                               labels=[*label_names, "phase"])
    mem_total = GaugeMetricFamily("cocoon_guest_memory_total_bytes", "the guest's MemTotal",
                                  labels=label_names)
    mem_avail = GaugeMetricFamily("cocoon_guest_memory_available_bytes",
                                  "the guest's MemAvailable", labels=label_names)
    guest_cpu = CounterMetricFamily("cocoon_guest_cpu_seconds", "the guest's CPU time by mode",
                                    labels=[*label_names, "mode"])
    loads = {n: GaugeMetricFamily(f"cocoon_guest_load{n}", f"the guest's {n}-minute load",
                                  labels=label_names) for n in (1, 5, 15)}
    for sample in samples:
        key = ids(sample)
        info.add_metric([*key, sample.started_from, sample.accel], 1)
        for name, figures in sample.processes.items():
            cpu.add_metric([*key, name], figures.cpu_seconds)
            rss.add_metric([*key, name], figures.resident_bytes)
        for phase, seconds in sample.phases.items():
            phases.add_metric([*key, phase], seconds)
        guest = sample.guest
        if guest is not None:
            mem_total.add_metric(key, guest.memory_total_bytes)
            mem_avail.add_metric(key, guest.memory_available_bytes)
            guest_cpu.add_metric([*key, "user"], guest.cpu_user_seconds)
            guest_cpu.add_metric([*key, "system"], guest.cpu_system_seconds)
            guest_cpu.add_metric([*key, "idle"], guest.cpu_idle_seconds)
            for n, value in ((1, guest.load1), (5, guest.load5), (15, guest.load15)):
                loads[n].add_metric(key, value)
    yield from (info, cpu, rss, phases, mem_total, mem_avail, guest_cpu, *loads.values())


def registry_for(vm_root: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SandboxCollector(vm_root, registry))
    return registry
