"""`cocoon metrics serve` scraped by Debian's real Prometheus server: the series of a running
container (annotated as a CRI pod's) are read back through Prometheus' HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.framework.cli import Cli
from tests.vm.container_kit import make_bundle

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus is not installed")]

COCOON = str(Path(sys.executable).parent / "cocoon")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(port: int, promql: str, timeout: float = 90.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = query(port, promql)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def test_prometheus_scrapes_a_running_containers_series(tmp_path: Path, state_root: Path,
                                                      vm_root: Path) -> None:
    def annotate(spec: dict[str, Any]) -> None:
        spec["annotations"] = {"io.kubernetes.cri.sandbox-namespace": "team-a",
                               "io.kubernetes.cri.sandbox-name": "web-0"}

    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "600"], annotate)
    exporter_port, prometheus_port = free_port(), free_port()
    exporter = subprocess.Popen([COCOON, "metrics", "serve", "--listen",
                                 f"127.0.0.1:{exporter_port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: cocoon
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
""")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        cli.ok("run", "--detach", "--bundle", str(bundle), "met1")
        memory = wait_for(prometheus_port,
                          'cocoon_guest_memory_total_bytes{sandbox="met1"}')
        assert memory, (tmp_path / "prometheus.log").read_text()[-2000:]
        series = memory[0]["metric"]
        assert series["kube_namespace"] == "team-a" and series["kube_pod"] == "web-0"
        total = float(memory[0]["value"][1])
        assert 128 << 20 < total <= 256 << 20  # the VM's 256 MiB, less what the kernel keeps
        qemu_rss = query(prometheus_port, 'cocoon_sandbox_process_resident_bytes'
                                          '{sandbox="met1",process="qemu"}')
        assert qemu_rss and float(qemu_rss[0]["value"][1]) > 32 << 20
        running = query(prometheus_port, 'cocoon_sandboxes{state="running"}')
        assert running and float(running[0]["value"][1]) >= 1
        guest_cpu = wait_for(prometheus_port,
                             'rate(cocoon_guest_cpu_seconds_total{sandbox="met1"}[10s])')
        assert {r["metric"]["mode"] for r in guest_cpu} == {"user", "system", "idle"}
        latency = wait_for(prometheus_port,
                           'cocoon_agent_rpc_seconds_count{method="GuestStats"}')
        assert latency and float(latency[0]["value"][1]) >= 1
        starts = query(prometheus_port, 'sum(cocoon_sandbox_starts_total)')
        assert starts and float(starts[0]["value"][1]) >= 1
        phases = query(prometheus_port, 'cocoon_sandbox_phase_seconds{sandbox="met1"}')
        assert phases
    finally:
        cli("delete", "--force", "met1")
        prometheus.terminate()
        exporter.terminate()
        prometheus.wait(timeout=30)
        exporter.wait(timeout=30)
    assert exporter.returncode == 0, exporter.stderr.read() if exporter.stderr else ""


def test_a_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([COCOON, "metrics", "serve", "--listen", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and str(port) in result.stderr
