"""Kubernetes' path: containerd's CRI plugin, runtime handler `cocoon`, one VM per pod.

The test talks CRI v1 over gRPC as the kubelet does (cri_client). The pod uses the node's
network (there is no CNI network on this host); its sandbox image is a busybox variant whose
command sleeps, built locally and imported into the k8s.io namespace.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.protocols.gen import cri_pb2 as cri
from tests.framework.leaks import processes
from tests.integration.containerd_env import (
    BUSYBOX,
    HANDLER,
    PAUSE,
    PAUSE_CMD,
    Containerd,
    write_image,
)
from tests.integration.cri_client import (
    CRIClient,
    container_config,
    host_network_pod,
    list_pod_stats,
)

pytestmark = [pytest.mark.integration, pytest.mark.vm,
              pytest.mark.skipif(shutil.which("containerd") is None,
                                 reason="containerd is not installed")]


@pytest.fixture
def leak_check() -> None:
    """Replaces the suite's check of the shared /run/cocoon-vm for this module.

    This containerd's shims keep every VM, socket and mount in its own directories
    (COCOON_VM_DIR and COCOON_SHIM_SOCKET_DIR in its environment), which this module checks
    itself; the shared root would only show other suites' sandboxes running at the same time.
    """


BOOT_ID = "/proc/sys/kernel/random/boot_id"
# the RuntimeClass overhead in docs/containerd.md: what one pod's host processes may take
POD_OVERHEAD_MIB = 320
POD_OVERHEAD_CPU = 0.1


@pytest.fixture
def ctrd() -> Iterator[Containerd]:
    c = Containerd()
    try:
        c.start()
        c.import_image(write_image(c.base / "busybox.tar", BUSYBOX), namespace="k8s.io")
        c.import_image(write_image(c.base / "pause.tar", PAUSE, PAUSE_CMD), namespace="k8s.io")
        yield c
    finally:
        report = c.close()
    assert not report, f"left behind: {report}"


def wait_state(client: CRIClient, container_id: str, state: int,
               timeout: float = 60.0) -> cri.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = client.container_status(container_id)
        if status.state == state or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_pod_of_two_containers_runs_in_one_vm(ctrd: Containerd) -> None:
    client = CRIClient(ctrd.socket)
    logs = ctrd.base / "pod-logs"
    logs.mkdir()
    pod = host_network_pod("web", "uid-web-1", logs)
    try:
        assert client.version().runtime_api_version == "v1"
        pod_id = client.run_pod(pod, HANDLER)
        long_running = client.create_container(pod_id, container_config(
            "app", BUSYBOX, ["sh", "-c", f"cat {BOOT_ID}; exec sleep 1000"], pod), pod)
        client.start_container(long_running)
        short = client.create_container(pod_id, container_config(
            "job", BUSYBOX, ["sh", "-c", f"cat {BOOT_ID}; exit 7"], pod), pod)
        client.start_container(short)

        assert wait_state(client, long_running, cri.CONTAINER_RUNNING).state == \
            cri.CONTAINER_RUNNING
        finished = wait_state(client, short, cri.CONTAINER_EXITED)
        assert (finished.state, finished.exit_code) == (cri.CONTAINER_EXITED, 7)

        exec_result = client.exec_sync(long_running, ["cat", BOOT_ID])
        assert exec_result.exit_code == 0
        boot_id = exec_result.stdout.decode().strip()
        assert boot_id and boot_id != Path(BOOT_ID).read_text().strip(), "not in a guest"
        failing = client.exec_sync(long_running, ["sh", "-c", "echo bad >&2; exit 3"])
        assert (failing.exit_code, failing.stderr) == (3, b"bad\n")
        # the pod shares one pid namespace: the app container sees the sandbox's process
        ps = client.exec_sync(long_running, ["ps", "-o", "pid,args"])
        assert " ".join(PAUSE_CMD) in ps.stdout.decode(), ps.stdout.decode()

        # both containers printed the same guest boot id: one VM for the pod
        deadline = time.monotonic() + 30
        printed: dict[str, str] = {}
        while len(printed) < 2 and time.monotonic() < deadline:
            for name in ("app", "job"):
                path = logs / f"{name}.log"
                if path.exists() and path.read_text().strip():
                    printed[name] = path.read_text().split()[-1]
            time.sleep(0.2)
        assert printed == {"app": boot_id, "job": boot_id}, printed
        assert len(list(ctrd.vm_dir.iterdir())) == 1, "more than one VM for the pod"

        client.stop_pod(pod_id)
        stopped = client.container_status(long_running)
        assert stopped.state == cri.CONTAINER_EXITED and stopped.exit_code == 137
        client.remove_pod(pod_id)
        assert not list(ctrd.vm_dir.iterdir()), "the pod's VM outlived its sandbox"
    finally:
        client.close()


def _pod_processes(ctrd: Containerd) -> dict[int, str]:
    """The pod's host processes: QEMU, virtiofsd, the monitor and the shim (not containerd)."""
    found = {}
    for proc in processes():
        if proc.state != "Z" and "--config" not in proc.argv and \
                any(str(ctrd.base) in arg for arg in proc.argv):
            found[proc.pid] = proc.kind if proc.kind != "process" else "shim"
    return found


def _pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_pod_overhead_fits_the_runtimeclass_figure(ctrd: Containerd) -> None:
    """PSS and idle CPU of one pod's host processes, against the documented overhead."""
    client = CRIClient(ctrd.socket)
    logs = ctrd.base / "pod-logs"
    logs.mkdir()
    pod = host_network_pod("measured", "uid-measured-1", logs)
    try:
        pod_id = client.run_pod(pod, HANDLER)
        app = client.create_container(pod_id, container_config(
            "app", BUSYBOX, ["sleep", "1000"], pod), pod)
        client.start_container(app)
        time.sleep(5.0)  # past the boot: an idle pod
        pods = _pod_processes(ctrd)
        assert sorted(pods.values()) == ["monitor", "qemu", "shim", "virtiofsd", "virtiofsd"]
        before = {pid: _cpu_ticks(pid) for pid in pods}
        started = time.monotonic()
        time.sleep(10.0)
        cpu = sum(_cpu_ticks(pid) - before[pid] for pid in pods) / os.sysconf("SC_CLK_TCK")
        cores = cpu / (time.monotonic() - started)
        pss = {pid: _pss_kib(pid) for pid in pods}
        total_mib = sum(pss.values()) / 1024
        breakdown = ", ".join(f"{pods[p]} {pss[p] / 1024:.0f} MiB" for p in sorted(pods))
        print(f"pod overhead: PSS {total_mib:.0f} MiB ({breakdown}); idle CPU {cores:.3f} cores")
        assert total_mib < POD_OVERHEAD_MIB, breakdown
        assert cores < POD_OVERHEAD_CPU
        client.stop_pod(pod_id)
        client.remove_pod(pod_id)
    finally:
        client.close()


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_dirs(path: str) -> list[Path]:
    """`path` in every mounted v1 hierarchy (and the unified one)."""
    return [mount / path.lstrip("/") for mount in sorted(CGROUP_ROOT.iterdir())
            if (mount / "cgroup.procs").exists()]


def _remove_cgroup_tree(path: str) -> None:
    """What the kubelet does with a pod's cgroup once the pod is gone."""
    for directory in _cgroup_dirs(path):
        for level in [directory, *directory.parents]:
            if level == CGROUP_ROOT or not level.is_relative_to(CGROUP_ROOT) or \
                    len(level.relative_to(CGROUP_ROOT).parts) < 2:
                break
            try:
                level.rmdir()
            except OSError:
                break


def test_pod_cgroups_nest_under_the_kubelets_parent_and_give_pod_stats(
        ctrd: Containerd) -> None:
    """The kubelet's layout: the pod's cgroup parent, the sandbox's cgroup holding the VM,
    each container's beside it with its limits; ListPodSandboxStats reads the parent."""
    client = CRIClient(ctrd.socket)
    logs = ctrd.base / "pod-logs"
    logs.mkdir()
    parent = "/cocoon-kubepods/burstable/pod-uid-cg-1"
    pod = host_network_pod("cg", "uid-cg-1", logs)
    pod.linux.cgroup_parent = parent
    try:
        pod_id = client.run_pod(pod, HANDLER)
        config = container_config("app", BUSYBOX, ["sleep", "1000"], pod)
        config.linux.resources.memory_limit_in_bytes = 64 << 20
        config.linux.resources.cpu_shares = 256
        app = client.create_container(pod_id, config, pod)
        client.start_container(app)
        memory = CGROUP_ROOT / "memory" / parent.lstrip("/")
        qemu = [pid for pid, kind in _pod_processes(ctrd).items() if kind == "qemu"]
        assert len(qemu) == 1
        procs = (memory / pod_id / "cgroup.procs").read_text().split()
        assert str(qemu[0]) in procs, procs
        limit = int((memory / app / "memory.limit_in_bytes").read_text())
        assert limit >= 64 << 20 and limit < 1 << 40, limit  # the VM's bound, not unlimited
        assert (CGROUP_ROOT / "cpu" / parent.lstrip("/") / app / "cpu.shares").read_text() \
            .strip() == "256"

        stats = list_pod_stats(client, pod_id)
        assert [s.attributes.id for s in stats] == [pod_id]
        linux = stats[0].linux
        assert linux.memory.working_set_bytes.value > 0, linux
        assert linux.cpu.usage_core_nano_seconds.value > 0, linux
        client.stop_pod(pod_id)
        client.remove_pod(pod_id)
        left = [d for d in _cgroup_dirs(parent) for name in (pod_id, app) if (d / name).exists()]
        assert not left, left
    finally:
        client.close()
        _remove_cgroup_tree(parent)
