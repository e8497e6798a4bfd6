"""The warm pool with real VMs, through the `cocoon` CLI as an engine drives it.

The pool is switched on for the test (`COCOON_POOL_SIZE=2`) in a private VM root and template
directory; the first container builds the template and fills the pool behind it, the next one
takes a pooled clone, and `cocoon template rm` stops the rest. The leak check proves that
nothing is left: no clone, monitor or directory, in the pool or out of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cocoon.sandbox import pool
from cocoon.sandbox.launcher import sandbox_processes
from cocoon.template import store
from tests.framework.cli import Cli
from tests.vm.container_kit import make_bundle, without_namespace

pytestmark = pytest.mark.vm

FILL_TIMEOUT = 180.0


@pytest.fixture
def cli(vm_root: Path, state_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Cli:
    monkeypatch.setenv(store.ENV_DIR, str(tmp_path / "templates"))
    monkeypatch.setenv("COCOON_TEMPLATES", "on")
    monkeypatch.setenv(pool.ENV_SIZE, "2")
    return Cli(state_root)


def ready_members(count: int) -> list[Path]:
    deadline = time.monotonic() + FILL_TIMEOUT
    while time.monotonic() < deadline:
        ready = [m.path for m in pool.members() if m.ready]
        if len(ready) >= count:
            return ready
        time.sleep(0.2)
    raise AssertionError(f"the pool did not fill to {count}: {pool.members()}")


def test_a_container_takes_a_pooled_clone_and_the_pool_refills(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "hostname; cat /proc/sys/kernel/"
                                                           "random/boot_id; ls /"],
                         lambda spec: spec.update(hostname="pooled"))
    first = cli.ok("run", "--bundle", str(bundle), "first").split()
    members = ready_members(2)
    assert all((member / pool.MARKER).exists() for member in members)
    second = cli.ok("run", "--bundle", str(bundle), "second").split()
    assert second[0] == first[0] == "pooled"
    assert second[1] != first[1]  # another guest
    assert "bin" in second[2:]  # the container's own rootfs, through the share
    taken = [member for member in members if not member.exists()]
    assert len(taken) == 1, "the container did not take a pooled clone"
    refilled = ready_members(2)
    assert set(refilled) - set(members)  # a new member took the place of the one taken
    shown = json.loads(cli.ok("template", "show", "--json"))
    assert [entry["pool_ready"] for entry in shown] == [2]
    out = cli.ok("template", "rm")
    assert "stopped 2 pooled clones" in out, out
    assert pool.members() == []


def test_a_pooled_clone_serves_a_detached_container(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "300"])
    cli.ok("run", "--bundle", str(make_bundle(tmp_path / "warm", ["true"])), "warm")
    members = ready_members(2)
    cli.ok("create", "--bundle", str(bundle), "detached")
    state = json.loads((cli.root / "detached" / "state.json").read_text())
    assert Path(state["vm_dir"]) in members
    assert not (Path(state["vm_dir"]) / pool.MARKER).exists()  # no longer the pool's
    # the clone was started for the pool; its processes moved into the container's cgroup
    vm = {str(p) for p in sandbox_processes(Path(state["vm_dir"]), shims=False)}
    for directory in state["host_cgroup"]["dirs"].values():
        assert vm <= set((Path(directory) / "cgroup.procs").read_text().split())
    cli.ok("start", "detached")
    assert "sleep 300" in cli.ok("exec", "detached", "ps", "-o", "args")
    cli.ok("delete", "--force", "detached")
    assert not Path(state["vm_dir"]).exists()
    cli.ok("template", "rm")
    assert pool.members() == []


def test_a_pooled_clone_serves_the_host_network(cli: Cli, tmp_path: Path) -> None:
    """A pool member has no NIC of its own; a host-network container that claims it gets the
    user-mode NIC then, once (a member must not be made with one)."""
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "ls /sys/class/net; ip route"],
                         without_namespace("network"))
    cli.ok("run", "--bundle", str(make_bundle(tmp_path / "warm", ["true"])), "warm")
    members = ready_members(2)
    out = cli.ok("run", "--bundle", str(bundle), "hostnet")
    assert len([m for m in members if not m.exists()]) == 1, "no pooled clone was taken"
    assert sorted(out.split()[:2]) == ["eth0", "lo"], out
    assert "default via 10.0.2.2" in out, out
    cli.ok("template", "rm")
    assert pool.members() == []
