"""Verbs that only read state import only what they need: no QEMU, pyroute2, protobuf or sandbox.

Each verb runs in a fresh interpreter under `-X importtime`, which names every module imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cocoon.cli.main import VERBS
from cocoon.oci.state import ContainerState, StateStore, Status

COCOON = [sys.executable, "-X", "importtime", "-c",
          "from cocoon.cli.main import entry; entry()"]
# what a verb that reads state must not import (a module or anything under it)
HEAVY = ("qemu", "pyroute2", "google.protobuf", "asyncio", "cocoon.hypervisor",
         "cocoon.sandbox", "cocoon.runtime", "cocoon.protocols", "cocoon.network",
         "cocoon.oci.spec", "cocoon.config", "tomllib")
DEAD_PID = 2**22 + 12345  # above pid_max's default: nobody has it


def run_verb(root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    result = subprocess.run([*COCOON, "--root", str(root), *args], capture_output=True,
                            text=True, timeout=60, check=False)
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    modules.discard("package")  # the header line
    return result, modules


def heavy(modules: set[str]) -> list[str]:
    """The entries of HEAVY that `modules` holds (themselves or modules under them)."""
    return [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in modules)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = StateStore(tmp_path / "state")
    store.create(ContainerState(id="alive", bundle="/b", rootfs="/b/rootfs",
                                status=Status.RUNNING, pid=os.getpid(),
                                created="2026-01-01T00:00:00Z"))
    store.create(ContainerState(id="gone", bundle="/b", rootfs="/b/rootfs",
                                status=Status.RUNNING, pid=DEAD_PID,
                                created="2026-01-01T00:00:00Z"))
    return store.root


@pytest.mark.parametrize("args", [["state", "alive"], ["state", "gone"], ["state", "ghost"],
                                  ["list"], ["list", "-f", "json"], ["list", "-q"],
                                  ["--help"], ["state", "--help"]])
def test_reading_verbs_import_nothing_heavy(args: list[str], root: Path) -> None:
    result, modules = run_verb(root, *args)
    assert "cocoon.cli.main" in modules, result.stderr[-2000:]
    assert heavy(modules) == [], f"cocoon {' '.join(args)} imported {heavy(modules)}"


def test_kill_imports_the_agent_client_but_not_the_vm_machinery(root: Path) -> None:
    result, modules = run_verb(root, "kill", "gone")
    assert result.returncode == 1
    assert "cocoon.sandbox.agentclient" in modules  # it talks to the agent...
    vm = sorted(m for m in modules if m.startswith(("qemu", "pyroute2", "cocoon.hypervisor",
                                                    "cocoon.sandbox.launcher",
                                                    "cocoon.sandbox.monitor",
                                                    "cocoon.runtime.operations",
                                                    "cocoon.runtime.create",
                                                    "cocoon.runtime.foreground",
                                                    "cocoon.runtime.teardown")))
    assert vm == []  # ...and starts no VM


def test_state_answers_as_before(root: Path) -> None:
    result, _ = run_verb(root, "state", "alive")
    assert result.returncode == 0, result.stderr[-2000:]
    alive = json.loads(result.stdout)
    assert alive == {"ociVersion": alive["ociVersion"], "id": "alive", "status": "running",
                     "pid": os.getpid(), "bundle": "/b", "rootfs": "/b/rootfs",
                     "created": "2026-01-01T00:00:00Z", "owner": "root"}
    result, _ = run_verb(root, "state", "gone")
    gone = json.loads(result.stdout)
    assert gone["status"] == "stopped" and gone["pid"] == 0  # its shim is gone
    result, _ = run_verb(root, "state", "ghost")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "cocoon: container ghost does not exist"
    result, _ = run_verb(root, "state", "bad/id")
    assert result.returncode == 1 and "invalid container id" in result.stderr


def test_list_answers_as_before(root: Path) -> None:
    (root / "half-made").mkdir()  # no state file yet: not listed
    result, _ = run_verb(root, "list", "-f", "json")
    states = json.loads(result.stdout)
    assert [(s["id"], s["status"], s["pid"]) for s in states] == [
        ("alive", "running", os.getpid()), ("gone", "stopped", 0)]
    result, _ = run_verb(root, "list", "-q")
    assert result.stdout.split() == ["alive", "gone"]


def test_the_verb_table_matches_the_verb_modules() -> None:
    """`--help` lists the verbs from main.VERBS; each verb's module registers it with that help."""
    for verb, (module_name, help_text) in VERBS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="verb")
        importlib.import_module(f"cocoon.cli.{module_name}").register(sub)
        helps = {action.dest: action.help for action in sub._choices_actions}
        assert helps.get(verb) == help_text, (verb, module_name, helps)
