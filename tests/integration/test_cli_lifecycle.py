"""The runc-compatible CLI against real VMs: every verb, every allowed and refused transition.

One container is walked through the whole lifecycle (created, running, paused, stopped,
deleted), trying every verb in every status; refusals must be one line on stderr, a non-zero
exit and an unchanged state. A second scenario starts ten containers in parallel, each in its
own VM, and deletes them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.framework.cli import COCOON
from tests.framework.cli import Cli as FrameworkCli

pytestmark = pytest.mark.integration



class Cli(FrameworkCli):
    def refused(self, *args: str, match: str) -> None:
        before = self.status(args[-1]) if args[-1] != "true" else None
        result = self(*args)
        assert result.returncode != 0, f"cocoon {' '.join(args)} should have been refused"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and match in lines[0], result.stderr
        if before is not None:
            assert self.status(args[-1]) == before  # the state is unchanged

    def status(self, cid: str) -> str:
        result = self("state", cid)
        if result.returncode != 0:
            return "gone"
        return str(json.loads(result.stdout)["status"])


def make_bundle(path: Path, args: list[str]) -> Path:
    from cocoon.guest import assets
    from cocoon.oci.default import default_spec

    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(assets.ensure_busybox_rootfs(), path / "rootfs", symlinks=True)
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": "rootfs", "readonly": False}
    (path / "config.json").write_text(json.dumps(spec))
    return path


@pytest.fixture
def cli(state_root: Path) -> Cli:
    return Cli(state_root)


def test_every_verb_in_every_status(cli: Cli, tmp_path: Path) -> None:
    loop = "trap 'exit 0' TERM; while true; do sleep 0.1; done"
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", loop])
    cid = "life"
    pid_file = tmp_path / "pid"
    create = cli("create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid)
    assert create.returncode == 0, create.stderr
    try:
        # created
        state = json.loads(cli.ok("state", cid))
        assert state["status"] == "created" and state["bundle"] == str(bundle)
        assert state["pid"] == int(pid_file.read_text()) and os.path.exists(f"/proc/{state['pid']}")
        cli.refused("create", "--bundle", str(bundle), cid, match=f"container {cid} already exists")
        cli.refused("pause", cid, match="it is created")
        cli.refused("resume", cid, match="it is created")
        cli.refused("delete", cid, match="it is created")
        assert json.loads(cli.ok("list", "--format", "json"))[0]["id"] == cid
        # running
        cli.ok("start", cid)
        assert cli.status(cid) == "running"
        cli.refused("start", cid, match="already running")
        cli.refused("resume", cid, match="it is running")
        cli.refused("delete", cid, match="it is running")
        assert_confined(cli.root / cid, state["pid"])
        assert cli("exec", cid, "sh", "-c", "exit 9").returncode == 9
        assert "sh -c" in cli.ok("ps", cid)
        assert json.loads(cli.ok("ps", "--format", "json", cid)) == [state["pid"]]
        stats = json.loads(cli.ok("events", "--stats", cid))
        assert stats["type"] == "stats" and stats["data"]["pids"]["current"] >= 1
        cli.ok("update", "--pids-limit", "50", cid)
        assert cli("exec", cid, "cat", "/sys/fs/cgroup/pids.max").stdout.strip() == "50"
        # paused
        cli.ok("pause", cid)
        assert cli.status(cid) == "paused"
        cli.refused("pause", cid, match="it is paused")
        cli.refused("start", cid, match="already paused")
        cli.refused("exec", "--detach", cid, "true", match="it is paused")
        cli.ok("resume", cid)
        assert cli.status(cid) == "running"
        # stopped
        cli.ok("kill", cid, "TERM")
        deadline = time.monotonic() + 30
        while cli.status(cid) != "stopped":
            assert time.monotonic() < deadline, "the container did not stop after SIGTERM"
            time.sleep(0.2)
        assert json.loads(cli.ok("state", cid))["pid"] == 0
        cli.refused("start", cid, match="it is stopped")
        cli.refused("kill", cid, match="it is stopped")
        cli.refused("pause", cid, match="it is stopped")
        cli.refused("exec", "--detach", cid, "true", match="it is stopped")
        cli.ok("delete", cid)
        assert cli.status(cid) == "gone"
        cli.refused("state", cid, match=f"container {cid} does not exist")
    finally:
        cli("delete", "--force", cid)


def assert_confined(state_dir: Path, shim: int) -> None:
    """A running container's shim holds no capability; its monitor only what it keeps
    (cocoon.sandbox.confinement); both with no_new_privs and a bounding set to match."""
    from cocoon.linux import privileges
    from cocoon.sandbox import confinement

    monitor = json.loads((state_dir / "state.json").read_text())["monitor_pid"]
    for pid, want in ((shim, 0), (monitor, confinement.kept(pooled=False))):
        for tid in os.listdir(f"/proc/{pid}/task"):
            status = privileges.status_of(pid, tid)
            assert status == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                              "CapAmb": 0, "NoNewPrivs": 1}, (pid, tid, status)


def test_force_delete_of_a_running_container(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["sleep", "1000"])
    assert cli("run", "--detach", "--bundle", str(bundle), "fd").returncode == 0
    assert cli.status("fd") == "running"
    cli.ok("delete", "--force", "fd")
    assert cli.status("fd") == "gone"


def test_ten_containers_in_parallel_each_in_its_own_vm(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "cat /proc/sys/kernel/random/boot_id; "
                                                      "sleep 1000"])
    ids = [f"p{i}" for i in range(10)]

    def up(cid: str) -> subprocess.CompletedProcess[str]:
        with open(tmp_path / f"{cid}.out", "w") as out, \
                open(tmp_path / f"{cid}.err", "w+") as err:
            proc = subprocess.run([COCOON, "--root", str(cli.root), "run", "--detach",
                                   "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=err, timeout=600, check=False)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, "", err.read())

    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(up, ids))
        for cid, result in zip(ids, results, strict=True):
            assert result.returncode == 0, f"{cid}: {result.stderr}"
        assert sorted(json.loads(cli.ok("list", "--format", "json")),
                      key=lambda s: s["id"]) and all(cli.status(c) == "running" for c in ids)
        deadline = time.monotonic() + 60
        boot_ids: set[str] = set()
        while len(boot_ids) < 10 and time.monotonic() < deadline:
            boot_ids = {(tmp_path / f"{c}.out").read_text().strip() for c in ids}
            boot_ids.discard("")
            time.sleep(0.5)
        assert len(boot_ids) == 10  # ten guests, ten kernels booted
    finally:
        with ThreadPoolExecutor(max_workers=10) as pool:
            deleted = list(pool.map(lambda c: cli("delete", "--force", c, timeout=300), ids))
    for result in deleted:
        assert result.returncode == 0, result.stderr
    assert cli.ok("list", "-q") == ""


def test_hooks_run_where_the_spec_places_them(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "sleep 1000"])
    spec = json.loads((bundle / "config.json").read_text())
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nstate=$(cat)\necho "$1 $state" >> {log}\n')
    hook.chmod(0o755)
    spec["hooks"] = {kind: [{"path": str(hook), "args": ["hook.sh", kind]}]
                     for kind in ("prestart", "createRuntime", "poststart", "poststop")}
    (bundle / "config.json").write_text(json.dumps(spec))
    cli.ok("create", "--bundle", str(bundle), "hooked")
    try:
        seen = [line.split(" ", 1) for line in log.read_text().splitlines()]
        assert [kind for kind, _ in seen] == ["prestart", "createRuntime"]
        state = json.loads(seen[0][1])
        assert state["id"] == "hooked" and state["status"] == "created" and state["pid"] > 0
        cli.ok("start", "hooked")
        assert log.read_text().splitlines()[-1].startswith("poststart ")
        cli.ok("kill", "hooked", "KILL")
        deadline = time.monotonic() + 30
        while cli.status("hooked") != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cli.ok("delete", "hooked")
        last = log.read_text().splitlines()[-1]
        assert last.startswith("poststop ") and json.loads(last.split(" ", 1)[1])["id"] == "hooked"
    finally:
        cli("delete", "--force", "hooked")


def test_failing_prestart_hook_fails_create_and_leaves_nothing(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["true"])
    spec = json.loads((bundle / "config.json").read_text())
    spec["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    (bundle / "config.json").write_text(json.dumps(spec))
    result = cli("create", "--bundle", str(bundle), "badhook")
    assert result.returncode != 0
    assert result.stderr.strip() == "cocoon: hooks.prestart[0] (/bin/false) exited 1"
    assert cli.status("badhook") == "gone"


def test_in_container_hooks_are_refused_clearly(cli: Cli, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["true"])
    spec = json.loads((bundle / "config.json").read_text())
    spec["hooks"] = {"createContainer": [{"path": "/bin/true"}]}
    (bundle / "config.json").write_text(json.dumps(spec))
    result = cli("create", "--bundle", str(bundle), "inhook")
    assert result.returncode != 0 and "hooks.createContainer" in result.stderr
    assert cli.status("inhook") == "gone"


def test_the_configuration_is_fixed_at_create(cli: Cli, tmp_path: Path) -> None:
    """runc reads config.json once: editing it between create and start (or delete) changes
    nothing, not the process, not the hooks."""
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "echo original; sleep 1000"])
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:  # files: the shim keeps them
        code = subprocess.call([COCOON, "--root", str(cli.root), "create", "--bundle",
                                str(bundle), "fixed"], stdin=subprocess.DEVNULL,
                               stdout=stdout, stderr=stderr, timeout=240)
    assert code == 0, err.read_text()
    try:
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"]["args"] = ["sh", "-c", "echo edited"]
        spec["hooks"] = {"poststart": [{"path": "/bin/false"}],
                         "poststop": [{"path": "/bin/sh", "args": ["sh", "-c",
                                                                   f"echo ran > {tmp_path}/p"]}]}
        (bundle / "config.json").write_text(json.dumps(spec))
        cli.ok("start", "fixed")
        deadline = time.monotonic() + 30
        while "original" not in out.read_text():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        assert "edited" not in out.read_text()
        assert "sleep 1000" in cli.ok("exec", "fixed", "ps", "-o", "args")
    finally:
        cli("delete", "--force", "fixed")
    assert not (tmp_path / "p").exists()  # the poststop hook added after create never ran


def test_run_in_the_foreground_starts_as_start_does(cli: Cli, tmp_path: Path) -> None:
    """`run` goes through the same start as `start`: its poststart hooks run too."""
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "echo hello"])
    spec = json.loads((bundle / "config.json").read_text())
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1" >> {log}\n')
    hook.chmod(0o755)
    spec["hooks"] = {kind: [{"path": str(hook), "args": ["hook.sh", kind]}]
                     for kind in ("prestart", "poststart", "poststop")}
    (bundle / "config.json").write_text(json.dumps(spec))
    assert cli.ok("run", "--bundle", str(bundle), "fg").strip() == "hello"
    assert log.read_text().split() == ["prestart", "poststart", "poststop"]
