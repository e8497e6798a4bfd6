"""The warm pool with real VMs, through the `cocoon` CLI as an engine drives it.

The pool is switched on for the test (`COCOON_POOL_SIZE=2`) in a private VM root and template
directory; the first container builds the template and fills the pool behind it, the next one
takes a pooled clone, and `cocoon template rm` stops the rest. The leak check proves that
nothing is left: no clone, monitor or directory, in the pool or out of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cocoon.sandbox import pool
from cocoon.sandbox.launcher import sandbox_processes
from cocoon.template import store
from tests.framework.cli import COCOON, Cli
from tests.vm.container_kit import make_bundle, without_namespace

pytestmark = pytest.mark.vm

# a bound on a hang, not a guess at how long filling takes: each member that starts ends by
# its own deadlines (the template build's, the clone's), and the wait gives up at once when
# no member is starting any more
HANG_BOUND = 1200.0


@pytest.fixture
def cli(vm_root: Path, state_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Cli:
    monkeypatch.setenv(store.ENV_DIR, str(tmp_path / "templates"))
    monkeypatch.setenv("COCOON_TEMPLATES", "on")
    monkeypatch.setenv(pool.ENV_SIZE, "2")
    return Cli(state_root)


def ready_members(count: int) -> list[Path]:
    """The pool's ready members once there are `count`; fails as soon as the pool cannot get
    there (fewer ready and none starting: nothing would change any more)."""
    deadline = time.monotonic() + HANG_BOUND
    idle_since: float | None = None
    while time.monotonic() < deadline:
        current = pool.members()
        ready = [m.path for m in current if m.ready]
        if len(ready) >= count:
            return ready
        if any(not m.ready for m in current):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 2.0:  # seen twice over: not a member's handover
            raise AssertionError(f"the pool did not fill to {count} and nothing is starting: "
                                 f"{current}")
        time.sleep(0.2)
    raise AssertionError(f"the pool did not fill to {count} in {HANG_BOUND:.0f} s: "
                         f"{pool.members()}")


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


def kill_the_template_build(vm_root: Path) -> bool:
    """SIGKILL the QEMU of a template build as soon as one runs under `vm_root`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for directory in (d for d in vm_root.iterdir() if d.is_dir()):
            for pid in sandbox_processes(directory, shims=False):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"qemu-system" in argv.split(b"\0")[0] and b"cocoon-template-" in argv:
                    os.kill(pid, signal.SIGKILL)
                    return True
        time.sleep(0.005)
    return False


def test_the_pool_fills_after_a_template_build_that_failed(cli: Cli, tmp_path: Path,
                                                          vm_root: Path) -> None:
    """The first container's template build fails (its QEMU killed; on a slow host, its boot
    deadline passed): the container boots cold, and the pool is still filled, by members that
    build the template themselves, instead of staying empty ("the pool did not fill to 2: []")."""
    bundle = make_bundle(tmp_path / "bundle", ["true"])
    first = subprocess.Popen([COCOON, "--root", str(cli.root), "run", "--bundle", str(bundle),
                              "first"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert kill_the_template_build(vm_root), "no template build was seen"
    finally:
        assert first.wait(timeout=240) == 0  # booted cold
    members = ready_members(2)
    templates = [t for _, t in store.listing(Path(os.environ[store.ENV_DIR]))]
    assert len(templates) == 1 and isinstance(templates[0], store.Template), templates
    assert {pool.members()[0].template} == {templates[0].name}
    cli.ok("run", "--bundle", str(bundle), "second")
    assert len([m for m in members if not m.exists()]) == 1, "no pooled clone was taken"
    cli.ok("template", "rm")
    assert pool.members() == []
