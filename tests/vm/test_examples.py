"""The examples in examples/ run, as a user runs them (a fresh interpreter, the repository's
virtualenv), in a private VM root with the leak check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_example(name: str, *args: str, vm_root: Path, cwd: Path | None = None,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COCOON_VM_DIR=str(vm_root))
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout, check=False)


def test_untrusted_script(vm_root: Path) -> None:
    done = run_example("untrusted_script.py", vm_root=vm_root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "well-behaved: exit 0: hello from sandbox, 1 CPU"
    assert lines[1] == "endless: killed after 5 s"
    assert lines[2] == "memory-hungry: killed for going over 64 MiB"


def test_job_pool(vm_root: Path) -> None:
    done = run_example("job_pool.py", "3", "8", vm_root=vm_root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 8
    for job, line in enumerate(lines):
        expected = "exit 7: " if job == 3 else f"exit 0: {job * job}"
        assert line.startswith(f"job {job} on worker ") and line.endswith(expected), line
    assert len({line.split()[4] for line in lines}) > 1  # the workers shared the queue


def test_project_tests(vm_root: Path, tmp_path: Path) -> None:
    done = run_example("project_tests.py", str(EXAMPLES / "project"), str(tmp_path / "report"),
                       vm_root=vm_root)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report" / "summary").read_text() == "3 passed, 0 failed\n"
    assert (tmp_path / "report" / "results.txt").read_text().count("PASS") == 3
    assert "3 passed, 0 failed" in done.stdout
