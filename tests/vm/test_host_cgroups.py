"""The sandbox's cgroup on the host, through the `cocoon` CLI: made at `cgroupsPath` with the
spec's limits (plus the VM's overhead where it counts), holding QEMU, virtiofsd, the monitor
and the shims, changed by `update` together with the guest's, gone after `delete`.

The host has the hybrid layout (v1 controllers, an unified hierarchy without controllers); the
leak check fails a test that leaves a cgroup directory behind.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocoon.hostcgroup import hierarchy
from cocoon.hostcgroup.settings import HOST_MEMORY_OVERHEAD, TASK_OVERHEAD
from cocoon.sandbox.launcher import sandbox_processes
from tests.framework.cli import Cli
from tests.vm.container_kit import make_bundle

pytestmark = pytest.mark.vm

MIB = 1 << 20
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def cli(vm_root: Path, state_root: Path) -> Cli:
    return Cli(state_root)


@pytest.fixture
def parent() -> Iterator[str]:
    """A top-level cgroup parent made before the container, as a kubelet makes a pod's, and
    removed afterwards."""
    name = f"cocoon-test-{secrets.token_hex(4)}"
    for directory in hierarchy_dirs(f"/{name}"):
        directory.mkdir()
    yield f"/{name}"
    for mount in CGROUP_ROOT.iterdir():
        if (mount / name).is_dir():
            for level, _, _ in os.walk(mount / name, topdown=False):
                os.rmdir(level)


def sleeper(directory: Path, edit: Any = None) -> Path:
    return make_bundle(directory, ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1;"
                                               " done"], edit)


def with_linux(**fields: Any) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"].update(fields)
    return edit


def read(path: Path) -> str:
    return path.read_text().strip()


def procs(directory: Path) -> set[int]:
    return {int(p) for p in read(directory / "cgroup.procs").split()}


def hierarchy_dirs(cgroup: str) -> list[Path]:
    """`cgroup` (absolute) in every hierarchy this host mounts."""
    return [h.directory(cgroup) for h in hierarchy.hierarchies()]


def state_of(cli: Cli, cid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((cli.root / cid / "state.json").read_text())
    return data


def test_the_cgroup_at_the_asked_path_has_the_limits_and_the_vm(
        cli: Cli, parent: str, tmp_path: Path) -> None:
    block = Path("/sys/block/loop0/dev").read_text().strip()
    major, minor = (int(n) for n in block.split(":"))
    resources = {
        "memory": {"limit": 64 * MIB, "reservation": 32 * MIB},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 100},
        "blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor,
                                               "rate": 1048576}]},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
    }
    path = f"{parent}/box"
    bundle = sleeper(tmp_path / "b", with_linux(cgroupsPath=path, resources=resources))
    cli.ok("create", "--bundle", str(bundle), "box")
    state = state_of(cli, "box")
    vm = sandbox_processes(Path(state["vm_dir"]), shims=False)
    kinds = sorted(Path(Path(f"/proc/{p}/cmdline").read_text().split("\0")[0]).name for p in vm)
    assert any(k.startswith("qemu-system") for k in kinds) and "virtiofsd" in kinds, kinds
    for directory in hierarchy_dirs(path):
        # QEMU (with its vCPU threads), virtiofsd, the monitor and the shim, in every hierarchy
        assert set(vm) | {state["pid"]} <= procs(directory), directory
    memory = CGROUP_ROOT / "memory" / path.lstrip("/")
    vm_ram = 256 * MIB  # the smallest VM: 64 MiB and the guest's own 128 MiB fit in it
    assert int(read(memory / "memory.limit_in_bytes")) == vm_ram + HOST_MEMORY_OVERHEAD
    assert int(read(memory / "memory.soft_limit_in_bytes")) == 32 * MIB
    cpu = CGROUP_ROOT / "cpu" / path.lstrip("/")
    assert (read(cpu / "cpu.shares"), read(cpu / "cpu.cfs_quota_us"),
            read(cpu / "cpu.cfs_period_us")) == ("512", "50000", "100000")
    assert read(CGROUP_ROOT / "cpuset" / path.lstrip("/") / "cpuset.cpus") == "0"
    assert read(CGROUP_ROOT / "pids" / path.lstrip("/") / "pids.max") == str(100 + TASK_OVERHEAD)
    assert read(CGROUP_ROOT / "blkio" / path.lstrip("/") / "blkio.throttle.read_bps_device") \
        == f"{block} 1048576"
    devices = read(CGROUP_ROOT / "devices" / path.lstrip("/") / "devices.list").splitlines()
    assert "c 1:3 rwm" in devices and "c 10:232 rwm" in devices and "a *:* rwm" not in devices

    cli.ok("start", "box")
    # the same limits apply in the guest, exactly
    assert cli.ok("exec", "box", "cat", "/sys/fs/cgroup/memory.max").strip() == str(64 * MIB)
    cli.ok("exec", "--detach", "box", "sleep", "30")
    [shim] = state_of(cli, "box")["execs"].values()
    assert shim in procs(memory)  # an exec's shim joins the container's cgroup, as under runc

    cli.ok("update", "--memory", "1G", "--pids-limit", "50", "--cpu-shares", "256", "box")
    assert int(read(memory / "memory.limit_in_bytes")) == 1024 * MIB + HOST_MEMORY_OVERHEAD
    assert read(CGROUP_ROOT / "pids" / path.lstrip("/") / "pids.max") == str(50 + TASK_OVERHEAD)
    assert read(cpu / "cpu.shares") == "256"
    assert cli.ok("exec", "box", "cat", "/sys/fs/cgroup/memory.max").strip() == str(1024 * MIB)

    refused = cli("update", "--cpuset-cpus", "0-255", "box")
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "cpu.cpus" in refused.stderr, refused.stderr

    cli.ok("kill", "box", "TERM")
    cli.ok("delete", "--force", "box")
    assert not any(d.exists() for d in hierarchy_dirs(path))
    assert all(d.exists() for d in hierarchy_dirs(parent))  # the parent is not ours to remove


def test_no_path_means_the_id_under_the_runtimes_own_cgroup(cli: Cli, tmp_path: Path) -> None:
    """runc's rule: relative paths, and the id when there is none, hang below the cgroup the
    runtime runs in (here the test's), hierarchy by hierarchy."""
    cid = f"own-{secrets.token_hex(3)}"
    cli.ok("run", "--detach", "--bundle", str(sleeper(tmp_path / "b")), cid)
    own = hierarchy.own_cgroups()
    try:
        state = state_of(cli, cid)
        for found in hierarchy.hierarchies():
            directory = found.directory(os.path.join(own.get(found.key, "/"), cid))
            assert directory.is_dir(), directory
            assert state["pid"] in procs(directory)
    finally:
        cli.ok("delete", "--force", cid)
    assert not any(found.directory(os.path.join(own.get(found.key, "/"), cid)).exists()
                   for found in hierarchy.hierarchies())


def test_the_systemd_driver_makes_the_scope_in_its_slice(
        cli: Cli, tmp_path: Path) -> None:
    slice_name = f"cocoontest{secrets.token_hex(3)}"
    bundle = sleeper(tmp_path / "b",
                     with_linux(cgroupsPath=f"{slice_name}-pods.slice:cocoon:sd1"))
    result = cli("--systemd-cgroup", "create", "--bundle", str(bundle), "sd1")
    assert result.returncode == 0, result.stderr
    scope = f"/{slice_name}.slice/{slice_name}-pods.slice/cocoon-sd1.scope"
    try:
        state = state_of(cli, "sd1")
        for directory in hierarchy_dirs(scope):
            assert state["pid"] in procs(directory), directory
    finally:
        cli.ok("delete", "--force", "sd1")
    # the slices were made for the scope: they go with it
    assert not any(d.parent.parent.exists() for d in hierarchy_dirs(scope))


def test_a_limit_the_host_refuses_fails_create_and_leaves_nothing(
        cli: Cli, parent: str, tmp_path: Path) -> None:
    bundle = sleeper(tmp_path / "b", with_linux(
        cgroupsPath=f"{parent}/bad", resources={"cpu": {"cpus": "0-255"}}))
    result = cli("create", "--bundle", str(bundle), "bad")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "linux.resources.cpu.cpus" in lines[0] and "0-255" in lines[0], \
        result.stderr
    assert cli("state", "bad").returncode != 0
    assert not any(d.exists() for d in hierarchy_dirs(f"{parent}/bad"))


def test_a_joined_container_has_a_cgroup_of_its_own_and_inherits_the_vm(
        cli: Cli, parent: str, tmp_path: Path) -> None:
    """A pod in one VM: the VM stays in the cgroup of the container it was started for, the
    joiner's shim in its own; when the first goes, the VM moves to the one that remains."""
    cli.ok("run", "--detach", "--bundle",
           str(sleeper(tmp_path / "a", with_linux(cgroupsPath=f"{parent}/a"))), "a")
    owner = state_of(cli, "a")

    def join(spec: dict[str, Any]) -> None:
        spec["linux"]["cgroupsPath"] = f"{parent}/b"
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] in ("ipc", "uts", "network"):
                namespace["path"] = f"/proc/{owner['pid']}/ns/{namespace['type'][:3]}"
    cli.ok("run", "--detach", "--bundle", str(sleeper(tmp_path / "b", join)), "b")
    joiner = state_of(cli, "b")
    assert joiner["vm_dir"] == owner["vm_dir"]
    vm = set(sandbox_processes(Path(owner["vm_dir"]), shims=False))
    memory_a, memory_b = (CGROUP_ROOT / "memory" / parent.lstrip("/") / n for n in "ab")
    assert vm <= procs(memory_a) and joiner["pid"] in procs(memory_b)
    assert not vm & procs(memory_b)

    cli.ok("delete", "--force", "a")
    assert not memory_a.exists()
    assert vm <= procs(memory_b)  # handed over with the VM
    assert "sleep" in cli.ok("exec", "b", "ps", "-o", "args")
    cli.ok("delete", "--force", "b")
    assert not memory_b.exists()
