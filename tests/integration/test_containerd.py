"""containerd 1.6 driving containerd-shim-cocoon-v2 through `ctr` (runtime io.containerd.cocoon.v2).

One private containerd serves the module (own root, state, socket and config; see
containerd_env); the busybox image is built locally and loaded with `ctr image import`. Every
test ends with the leak check: no QEMU, virtiofsd, monitor or shim process, no mount and no
socket or VM directory of this containerd's may be left.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework.leaks import LeakCheck
from tests.integration.containerd_env import (
    BUSYBOX,
    RUNTIME,
    SHIM_BIN,
    Containerd,
    busybox_containerd,
    write_image,
)
from tests.integration.ptydriver import PtySession

pytestmark = [pytest.mark.integration, pytest.mark.vm,
              pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                                 reason="containerd is not installed")]


@pytest.fixture
def leak_check() -> None:
    """Replaces the suite's check of the shared /run/cocoon-vm for this module.

    This containerd's shims keep every VM, socket and mount in its own directories
    (COCOON_VM_DIR and COCOON_SHIM_SOCKET_DIR in its environment), which this module checks
    itself; the shared root would only show other suites' sandboxes running at the same time.
    """



@pytest.fixture(scope="module")
def ctrd() -> Iterator[Containerd]:
    yield from busybox_containerd()


@pytest.fixture
def leaks(ctrd: Containerd) -> Iterator[LeakCheck]:
    yield from ctrd.checked()


class Events:
    """`ctr events` in the background: the task events containerd published, in order.

    Subscribing takes a moment and delivery is asynchronous, so both ends are fenced with a
    probe event (a namespace label change) that must come through first.
    """

    def __init__(self, ctrd: Containerd) -> None:
        self.ctrd = ctrd
        self.lines: list[str] = []
        self.proc = subprocess.Popen(ctrd.ctr_argv("events"), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=ctrd.env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._fence()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _fence(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = f"probe{time.monotonic_ns()}"
            self.ctrd.ctr("namespaces", "label", "default", f"cocoon-test={probe}")
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                if any(probe in line for line in self.lines):
                    return
                time.sleep(0.05)
        raise AssertionError("ctr events saw no probe event")

    def parsed(self) -> list[tuple[str, dict[str, object]]]:
        events = []
        for line in list(self.lines):
            match = re.search(r" (/tasks/\S+) (\{.*\})$", line)
            if match:
                events.append((match.group(1), json.loads(match.group(2))))
        return events

    def wait_for(self, topic: str, container_id: str,
                 timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen, event in self.parsed():
                if seen == topic and event.get("container_id") == container_id:
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no {topic} event for {container_id}: {self.parsed()}")

    def stop(self) -> list[tuple[str, dict[str, object]]]:
        self._fence()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.parsed()


def run_ctr(ctrd: Containerd, *args: str, input: str | None = None,
            timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return ctrd.ctr(*args, check=False, input=input, timeout=timeout)


def shim_pids(ctrd: Containerd) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"cocoon.shim.daemon" in argv and any(str(ctrd.socket_dir).encode() in a
                                                  for a in argv):
            pids.append(int(name))
    return pids


def task_status(ctrd: Containerd, name: str) -> str | None:
    for line in ctrd.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name:
            return fields[-1]
    return None


def test_run_prints_output_propagates_exit_code_in_guest_kernel(ctrd: Containerd,
                                                                  leaks: LeakCheck) -> None:
    result = run_ctr(ctrd, "run", "--rm", "--runtime", RUNTIME, BUSYBOX, "run1",
                     "sh", "-c", "echo hello from the guest; uname -r; echo oops >&2; exit 3")
    assert result.returncode == 3, result.stderr + ctrd.log_tail()
    lines = result.stdout.splitlines()
    assert lines[0] == "hello from the guest"
    assert lines[1] != platform.release(), "uname -r shows the host's kernel"
    assert "oops" in result.stderr
    assert task_status(ctrd, "run1") is None
    assert not ctrd.ctr("container", "ls", "-q").stdout.split()


def test_stdin_arrives_whole_before_its_end(ctrd: Containerd, leaks: LeakCheck) -> None:
    """20 MB through `ctr run` and `ctr task exec` (a stdio port each, WriteStdin when none is
    free), checked by digest: ctr closes the fifo and calls CloseIO while data is still on its
    way to the guest, and the end of file must come after all of it."""
    data = random.Random(5).randbytes(10_000_000).hex()
    digest = hashlib.md5(data.encode()).hexdigest()
    result = run_ctr(ctrd, "run", "--rm", "--runtime", RUNTIME, BUSYBOX, "stdin1",
                     "sh", "-c", "md5sum; exit 6", input=data)
    assert result.returncode == 6, result.stderr + ctrd.log_tail()
    assert result.stdout.split()[0] == digest
    started = run_ctr(ctrd, "run", "-d", "--runtime", RUNTIME, BUSYBOX, "stdin2",
                      "sleep", "1000")
    assert started.returncode == 0, started.stderr + ctrd.log_tail()
    try:
        exe = run_ctr(ctrd, "task", "exec", "--exec-id", "in1", "stdin2", "md5sum", input=data)
        assert exe.returncode == 0, exe.stderr + ctrd.log_tail()
        assert exe.stdout.split()[0] == digest
    finally:
        run_ctr(ctrd, "task", "kill", "-s", "SIGKILL", "stdin2")
        deadline = time.monotonic() + 30
        while task_status(ctrd, "stdin2") == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        run_ctr(ctrd, "task", "delete", "stdin2")
        run_ctr(ctrd, "container", "delete", "stdin2")


def test_a_bad_command_fails_in_one_line_and_leaves_nothing(ctrd: Containerd,
                                                            leaks: LeakCheck) -> None:
    result = run_ctr(ctrd, "run", "--rm", "--runtime", RUNTIME, BUSYBOX, "bad1",
                     "/no/such/program")
    assert result.returncode != 0
    assert "/no/such/program" in result.stderr and result.stderr.count("\n") == 1
    assert task_status(ctrd, "bad1") is None
    run_ctr(ctrd, "container", "delete", "bad1")


def test_detached_task_exec_ps_metrics_pause_resume_kill(ctrd: Containerd,
                                                         leaks: LeakCheck) -> None:
    events = Events(ctrd)
    result = run_ctr(ctrd, "run", "-d", "--runtime", RUNTIME, BUSYBOX, "det1",
                     "sh", "-c", "sleep 1000")
    assert result.returncode == 0, result.stderr + ctrd.log_tail()
    try:
        assert task_status(ctrd, "det1") == "RUNNING"
        exe = run_ctr(ctrd, "task", "exec", "--exec-id", "x1", "det1",
                      "sh", "-c", "echo in exec; exit 5")
        assert (exe.returncode, exe.stdout) == (5, "in exec\n"), exe.stderr
        cat = run_ctr(ctrd, "task", "exec", "--exec-id", "x2", "det1", "cat", input="piped in\n")
        assert (cat.returncode, cat.stdout) == (0, "piped in\n"), cat.stderr

        ps = ctrd.ctr("task", "ps", "det1").stdout.splitlines()
        assert ps[0].split() == ["PID", "INFO"] and len(ps) >= 2, ps  # guest pids of det1

        metrics = ctrd.ctr("task", "metrics", "det1").stdout
        usage = re.search(r"cpu\.usage_usec\s+(\d+)", metrics)
        assert usage and int(usage.group(1)) > 0, metrics
        assert re.search(r"pids\.current\s+[1-9]", metrics), metrics

        ctrd.ctr("task", "pause", "det1")
        assert task_status(ctrd, "det1") == "PAUSED"
        ctrd.ctr("task", "resume", "det1")
        assert task_status(ctrd, "det1") == "RUNNING"

        ctrd.ctr("task", "kill", "-s", "SIGKILL", "det1")
        deadline = time.monotonic() + 30
        while task_status(ctrd, "det1") != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert task_status(ctrd, "det1") == "STOPPED"
    finally:
        run_ctr(ctrd, "task", "kill", "-s", "SIGKILL", "det1")
        run_ctr(ctrd, "task", "delete", "det1")
        run_ctr(ctrd, "container", "delete", "det1")
    seen = [(topic, ev.get("exec_id") or ev.get("id") or "") for topic, ev in events.stop()
            if ev.get("container_id") == "det1"]
    assert seen == [
        ("/tasks/create", ""), ("/tasks/start", ""),
        ("/tasks/exec-added", "x1"), ("/tasks/exec-started", "x1"), ("/tasks/exit", "x1"),
        ("/tasks/exec-added", "x2"), ("/tasks/exec-started", "x2"), ("/tasks/exit", "x2"),
        ("/tasks/paused", ""), ("/tasks/resumed", ""),
        ("/tasks/exit", "det1"), ("/tasks/delete", ""),
    ], seen
    assert not shim_pids(ctrd)


def test_run_with_terminal_through_a_real_pty(ctrd: Containerd, leaks: LeakCheck) -> None:
    session = PtySession(ctrd.ctr_argv("run", "-t", "--rm", "--runtime", RUNTIME, BUSYBOX,
                                       "tty1", "sh"), env=ctrd.env, rows=30, cols=100)
    try:
        session.expect("# ", timeout=240)
        session.send("tty; stty size; echo $((6*7))X\r")
        out = session.expect("42X", timeout=30)
        assert "/dev/pts/" in out and "30 100" in out, out
        session.resize(40, 120)
        os.killpg(session.proc.pid, signal.SIGWINCH)
        time.sleep(1.0)
        session.send("stty size; echo $((6*8))Y\r")
        assert "40 120" in session.expect("48Y", timeout=30)
        session.send("exit 4\r")
        assert session.wait(60) == 4
    finally:
        session.close()
        run_ctr(ctrd, "task", "kill", "-s", "SIGKILL", "tty1")
        run_ctr(ctrd, "task", "delete", "tty1")
        run_ctr(ctrd, "container", "delete", "tty1")


def test_task_survives_containerd_restart(ctrd: Containerd, leaks: LeakCheck) -> None:
    result = run_ctr(ctrd, "run", "-d", "--runtime", RUNTIME, BUSYBOX, "rs1",
                     "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")
    assert result.returncode == 0, result.stderr + ctrd.log_tail()
    try:
        shims = shim_pids(ctrd)
        assert len(shims) == 1
        ctrd.restart()
        assert shim_pids(ctrd) == shims, "the shim did not outlive containerd"
        assert task_status(ctrd, "rs1") == "RUNNING"
        exe = run_ctr(ctrd, "task", "exec", "--exec-id", "after", "rs1", "echo", "reconnected")
        assert (exe.returncode, exe.stdout) == (0, "reconnected\n"), exe.stderr
        ctrd.ctr("task", "kill", "-s", "SIGTERM", "rs1")
        deadline = time.monotonic() + 30
        while task_status(ctrd, "rs1") != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert task_status(ctrd, "rs1") == "STOPPED"
    finally:
        run_ctr(ctrd, "task", "kill", "-s", "SIGKILL", "rs1")
        run_ctr(ctrd, "task", "delete", "rs1")
        run_ctr(ctrd, "container", "delete", "rs1")


def test_killed_shim_is_cleaned_up(ctrd: Containerd, leaks: LeakCheck) -> None:
    result = run_ctr(ctrd, "run", "-d", "--runtime", RUNTIME, BUSYBOX, "kill1", "sleep", "1000")
    assert result.returncode == 0, result.stderr + ctrd.log_tail()
    try:
        [shim] = shim_pids(ctrd)
        assert list(ctrd.vm_dir.iterdir()) and list(ctrd.socket_dir.iterdir())
        events = Events(ctrd)
        os.kill(shim, signal.SIGKILL)
        # containerd runs `delete` for the dead shim, then publishes the exit it reported
        exit_event = events.wait_for("/tasks/exit", "kill1")
        events.stop()
        assert exit_event.get("exit_status") == 137, exit_event
        assert task_status(ctrd, "kill1") is None, "containerd still lists the task"
        # `delete` ran: the VM, its monitor and virtiofsd, the socket and the mounts are gone
        report = ctrd.leak_check_after()
        assert not report, f"left after the shim was killed: {report}"
    finally:
        run_ctr(ctrd, "task", "delete", "kill1")
        run_ctr(ctrd, "container", "delete", "kill1")


def test_pods_take_clones_from_the_warm_pool() -> None:
    """The shim gets its VMs through the same launcher as the CLI: with a pool, from it."""
    from cocoon.sandbox import pool

    pooled = Containerd()
    templates = pooled.base / "templates"
    pooled.extra_env.update({pool.ENV_SIZE: "1", "COCOON_TEMPLATES": "on",
                             "COCOON_TEMPLATE_DIR": str(templates)})
    pooled.start()
    try:
        pooled.import_image(write_image(pooled.base / "busybox.tar", BUSYBOX))
        first = run_ctr(pooled, "run", "--rm", "--runtime", RUNTIME, BUSYBOX, "fills",
                        "cat", "/proc/sys/kernel/random/boot_id")
        assert first.returncode == 0, first.stderr + pooled.log_tail()
        member = _ready_member(pooled)
        second = run_ctr(pooled, "run", "--rm", "--runtime", RUNTIME, BUSYBOX, "takes",
                         "cat", "/proc/sys/kernel/random/boot_id")
        assert second.returncode == 0, second.stderr + pooled.log_tail()
        assert second.stdout != first.stdout
        assert not member.exists(), "the pod's VM did not come from the pool"
        _ready_member(pooled)  # refilled
    finally:
        subprocess.run([str(SHIM_BIN.with_name("cocoon")), "template", "rm"], env=pooled.env,
                       capture_output=True, timeout=120, check=False)
        report = pooled.close()
    assert not report, f"left behind: {report}"


def _ready_member(ctrd: Containerd, timeout: float = 180.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [p for p in (ctrd.vm_dir / ".pool").glob("*/*")]
        if ready:
            return ctrd.vm_dir / ready[0].name
        time.sleep(0.2)
    raise AssertionError(f"the pool did not fill: {ctrd.log_tail()}")


def test_the_runtime_options_config_path_shapes_the_pod_vm(ctrd: Containerd, leaks: LeakCheck,
                                                          tmp_path: Path) -> None:
    """`ctr run --runtime-config-path` is containerd's runtime options (Kata's ConfigPath), as
    a RuntimeClass's `options.ConfigPath` is: the shim's VM follows that file; a broken one
    fails the start with file:line:key."""
    config = tmp_path / "cocoon.toml"
    config.write_text("[hypervisor]\nmemory_mib = 512\nvcpus = 2\n\n"
                      '[templates]\nmode = "off"\n')
    result = run_ctr(ctrd, "run", "--rm", "--runtime", RUNTIME, "--runtime-config-path",
                     str(config), BUSYBOX, "cfg1", "sh", "-c",
                     "echo cpus=$(nproc); grep MemTotal /proc/meminfo")
    assert result.returncode == 0, result.stderr
    cpus = re.search(r"cpus=(\d+)", result.stdout)
    mem = re.search(r"MemTotal:\s+(\d+) kB", result.stdout)
    assert cpus and mem, result.stdout
    assert int(cpus.group(1)) == 2
    assert 400 < int(mem.group(1)) >> 10 <= 512
    config.write_text("[hypervisor]\nvcpus = 0\n")
    result = run_ctr(ctrd, "run", "--rm", "--runtime", RUNTIME, "--runtime-config-path",
                     str(config), BUSYBOX, "cfg2", "true")
    assert result.returncode != 0
    assert f"{config}:2: hypervisor.vcpus: must be an integer from 1 to 64, not 0" in \
        result.stderr
    run_ctr(ctrd, "container", "delete", "cfg2")


def test_output_written_just_before_exit_all_arrives(ctrd: Containerd, leaks: LeakCheck) -> None:
    """5 MB written, then exit at once: every byte reaches ctr before the exit status."""
    result = run_ctr(ctrd, "run", "--rm", "--runtime", RUNTIME, BUSYBOX, "late1", "sh", "-c",
                     "head -c 5000000 /dev/zero | tr '\\0' x; echo END; exit 4")
    assert result.returncode == 4, result.stderr + ctrd.log_tail()
    assert result.stdout == "x" * 5_000_000 + "END\n"
