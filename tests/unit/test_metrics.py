"""The metrics' pieces without a VM: the guest's /proc read, what a lying guest gets, the
exposition of a reading, and the pod labels taken from CRI's annotations."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cocoon.agent import gueststats
from cocoon.errors import AgentError
from cocoon.metrics import labels
from cocoon.metrics.exposition import SandboxCollector, families, start_source
from cocoon.metrics.sample import ProcessFigures, SandboxSample, process_figures
from cocoon.protocols.gen import guest_pb2
from cocoon.sandbox.agentclient import GuestStats


def test_the_guest_reads_its_own_proc(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:  250000 kB\nMemFree: 1 kB\n"
                                      "MemAvailable:  200000 kB\n")
    (tmp_path / "stat").write_text("cpu  100 0 50 1000 10 5 5 0 0 0\ncpu0 100 0 50 1000 10 5 5 0\n"
                                   "intr 1\n")
    (tmp_path / "loadavg").write_text("0.50 0.25 0.10 2/80 123\n")
    stats = gueststats.read(tmp_path)
    hz = os.sysconf("SC_CLK_TCK")
    assert stats.memory_total_bytes == 250000 * 1024
    assert stats.memory_available_bytes == 200000 * 1024
    assert stats.cpu_user_seconds == 100 / hz and stats.cpu_system_seconds == 60 / hz
    assert stats.cpu_idle_seconds == 1010 / hz and stats.cpus == 1
    assert (stats.load1, stats.processes) == (0.5, 2)
    GuestStats.checked(stats)  # a true reading passes


@pytest.mark.parametrize("lie", [
    {"memory_total_bytes": 0}, {"memory_available_bytes": 1 << 40},
    {"memory_total_bytes": 1 << 60}, {"cpus": 0}, {"cpus": 100000},
    {"cpu_user_seconds": math.nan}, {"cpu_idle_seconds": -1.0}, {"load1": math.inf},
])
def test_a_lying_guest_is_refused(lie: dict[str, float]) -> None:
    fields: dict[str, float] = {"memory_total_bytes": 1 << 28, "memory_available_bytes": 1 << 27,
                                "cpus": 1, "load1": 0.1}
    fields.update(lie)
    with pytest.raises(AgentError):
        GuestStats.checked(guest_pb2.GuestStatsResponse(**fields))  # type: ignore[arg-type]


def test_kubernetes_labels_come_from_cri_annotations() -> None:
    assert labels.from_annotations({"io.kubernetes.cri.sandbox-namespace": "team-a",
                                    "io.kubernetes.cri.sandbox-name": "web-0",
                                    "other": "x"}) == {"kube_namespace": "team-a",
                                                       "kube_pod": "web-0"}
    assert labels.from_annotations(None) == {}


def test_a_reading_in_the_text_format() -> None:
    guest = GuestStats(1 << 28, 1 << 27, 3.0, 1.0, 50.0, 0.5, 0.25, 0.1, 1)
    samples = [
        SandboxSample("pod-1", "abc", state="running", started_from="pool (template t)",
                      accel="tcg", labels={"kube_namespace": "ns", "kube_pod": "p"},
                      phases={"agent-ready": 0.2}, guest=guest,
                      processes={"qemu": ProcessFigures(1.5, 100 << 20)}),
        SandboxSample("ctr-2", "def", error="no answer"),
    ]
    registry = CollectorRegistry()

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(samples)

    registry.register(Fixed())
    text = generate_latest(registry).decode()
    assert 'cocoon_sandboxes{state="running"} 1.0' in text
    assert 'cocoon_sandboxes{state="unreachable"} 1.0' in text
    assert 'cocoon_guest_memory_total_bytes{kube_namespace="ns",kube_pod="p",sandbox="pod-1"} ' \
        '2.68435456e+08' in text
    assert 'cocoon_sandbox_process_cpu_seconds_total{kube_namespace="ns",kube_pod="p",' \
           'process="qemu",sandbox="pod-1"} 1.5' in text
    assert 'phase="agent-ready",sandbox="pod-1"} 0.2' in text
    assert 'mode="idle",sandbox="pod-1"} 50.0' in text
    assert [start_source(s) for s in ("cold boot", "template t", "pool (template t)")] == \
        ["cold", "template", "pool"]


def test_an_empty_host_still_answers(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(SandboxCollector(tmp_path / "none", registry))
    text = generate_latest(registry).decode()
    assert 'cocoon_sandboxes{state="running"} 0.0' in text
    assert 'cocoon_sandbox_starts_total{source="pool"} 0.0' in text


def test_process_figures_of_this_process_and_of_none() -> None:
    here = process_figures(os.getpid())
    assert here is not None and here.resident_bytes > 1 << 20 and here.cpu_seconds > 0
    assert process_figures(1 << 30) is None
