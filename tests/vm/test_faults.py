"""Faults an operator can cause by hand, through the `cocoon` CLI as an engine drives it.

Each case is one of issue 12's "seen failing on main": a host process of the sandbox killed (a
shim, the monitor, virtiofsd), a full state root, signals sent to the guest's PID 1, and input
that must be refused by name. After each, the container must be reachable or truthfully
stopped, `delete` must leave nothing, and nothing outside the sandbox may be touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.framework.cli import COCOON, Cli
from tests.vm.container_kit import make_bundle

pytestmark = pytest.mark.vm

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


@pytest.fixture
def cli(state_root: Path) -> Cli:
    return Cli(state_root)


@pytest.fixture
def ids(cli: Cli) -> Iterator[list[str]]:
    """Ids to force-delete at the end, whatever happened."""
    made: list[str] = []
    yield made
    for cid in made:
        cli("delete", "--force", cid)


def run_detached(cli: Cli, tmp_path: Path, ids: list[str], cid: str, args: list[str],
                 edit: object = None) -> None:
    ids.append(cid)
    bundle = make_bundle(tmp_path / cid, args, edit)  # type: ignore[arg-type]
    cli.ok("run", "--detach", "--bundle", str(bundle), cid)


def state(cli: Cli, cid: str) -> dict[str, object]:
    return dict(json.loads(cli.ok("state", cid)))


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} is still there"


def take_pid(pid: int, tries: int = 50) -> subprocess.Popen[bytes]:
    """A `sleep 300` in a session of its own that holds `pid` (freed before)."""
    for _ in range(tries):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"could not get pid {pid} back (a busy host took it first)")


# --- 1: a dead shim's pid is not signalled ----------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="ns_last_pid needs root")
def test_delete_does_not_kill_the_process_that_took_a_dead_shims_pid(
        cli: Cli, tmp_path: Path, ids: list[str]) -> None:
    run_detached(cli, tmp_path, ids, "reuse", ["sleep", "1000"])
    shim = int(state(cli, "reuse")["pid"])  # type: ignore[call-overload]
    os.kill(shim, signal.SIGKILL)
    wait_gone(shim)
    assert state(cli, "reuse")["pid"] == 0
    stranger = take_pid(shim)
    try:
        cli.ok("delete", "--force", "reuse")
        time.sleep(0.2)
        assert stranger.poll() is None, "delete killed a process that took the dead shim's pid"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="ns_last_pid needs root")
def test_delete_does_not_kill_the_process_that_took_a_dead_exec_shims_pid(
        cli: Cli, tmp_path: Path, ids: list[str]) -> None:
    run_detached(cli, tmp_path, ids, "reusex", ["sleep", "1000"])
    pid_file = tmp_path / "exec.pid"
    cli.ok("exec", "--detach", "--pid-file", str(pid_file), "reusex", "sleep", "1000")
    shim = int(pid_file.read_text())
    os.kill(shim, signal.SIGKILL)
    wait_gone(shim)
    stranger = take_pid(shim)
    try:
        assert cli.ok("ps", "--format", "json", "reusex").count(str(shim)) == 0
        cli.ok("delete", "--force", "reusex")
        time.sleep(0.2)
        assert stranger.poll() is None, "delete killed a process that took an exec shim's pid"
    finally:
        stranger.kill()
        stranger.wait()


# --- 3: a killed virtiofsd is the sandbox's end --------------------------------------------


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("which", ["parent", "child"])
def test_a_killed_virtiofsd_stops_the_sandbox(cli: Cli, tmp_path: Path, ids: list[str],
                                              vm_root: Path, which: str) -> None:
    run_detached(cli, tmp_path, ids, "fs", ["sleep", "1000"])
    pids = processes(f"{vm_root}/", "virtiofsd")
    assert len(pids) == 2, pids  # sandbox=namespace: a parent waiting for its child
    parent = next(p for p in pids if ppid(p) not in pids)
    child = next(p for p in pids if p != parent)
    os.kill(parent if which == "parent" else child, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while state(cli, "fs")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state(cli, "fs")["status"] == "stopped"
    started = time.monotonic()
    one_line_failure(cli("exec", "fs", "true", timeout=60), "fs")
    assert time.monotonic() - started < 30
    cli.ok("delete", "fs")
    ids.remove("fs")


# --- 4: a killed shim takes its process with it (runc's semantics) ---------------------------


def test_a_killed_shim_kills_its_process_in_the_guest(cli: Cli, tmp_path: Path,
                                                      ids: list[str]) -> None:
    run_detached(cli, tmp_path, ids, "stand", ["sleep", "1000"])
    pid_file = tmp_path / "exec.pid"
    cli.ok("exec", "--detach", "--pid-file", str(pid_file), "stand", "sleep", "2000")
    assert "sleep 2000" in cli.ok("ps", "stand")
    exec_shim = int(pid_file.read_text())
    os.kill(exec_shim, signal.SIGKILL)
    wait_gone(exec_shim)
    deadline = time.monotonic() + 30
    while "sleep 2000" in cli.ok("ps", "stand") and time.monotonic() < deadline:
        time.sleep(0.2)
    table = cli.ok("ps", "stand")
    assert "sleep 2000" not in table and "sleep 1000" in table, table
    # the init's stand-in: `stopped` is then the truth, in the guest too
    shim = int(state(cli, "stand")["pid"])  # type: ignore[call-overload]
    os.kill(shim, signal.SIGKILL)
    wait_gone(shim)
    assert state(cli, "stand")["status"] == "stopped"
    deadline = time.monotonic() + 30
    while "sleep 1000" in cli("ps", "stand").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "sleep 1000" not in cli("ps", "stand").stdout
    cli.ok("delete", "stand")
    ids.remove("stand")


def kill_shim_before_it_attaches(cli_pid: int, timeout: float = 60.0) -> bool:
    """SIGKILL the per-process shim the CLI `cli_pid` forks, the moment it appears (it is a
    Python program: it takes tens of milliseconds to reach its attach); False if none came."""
    children = Path(f"/proc/{cli_pid}/task/{cli_pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            return False  # the CLI has ended
        for pid in pids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"cocoon.runtime.shimproc" in argv:
                os.kill(pid, signal.SIGKILL)
                return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("verb", ["exec", "create"])
def test_a_shim_killed_before_it_attaches_leaves_no_process(verb: str, cli: Cli,
                                                            tmp_path: Path,
                                                            ids: list[str]) -> None:
    """The shim dies after the guest process was made but before the monitor knew of the
    shim: the CLI that spawned it reports it in one line and the process goes too (only the
    CLI knew of both; the monitor kills a process only when an attached shim goes away)."""
    if verb == "exec":
        run_detached(cli, tmp_path, ids, "early", ["sleep", "1000"])
        args = ["exec", "--detach", "early", "sleep", "2000"]
    else:
        ids.append("early")
        args = ["create", "--bundle", str(make_bundle(tmp_path / "b", ["sleep", "2000"])),
                "early"]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([COCOON, "--root", str(cli.root), *args], stdout=err,
                                stderr=err, stdin=subprocess.DEVNULL, text=True)
        assert kill_shim_before_it_attaches(proc.pid), "no shim appeared"
        code = proc.wait(timeout=120)
        err.seek(0)
        message = err.read()
    assert code != 0, "the CLI reported success though its shim died before attaching"
    assert message.count("\n") == 1 and "Traceback" not in message, message
    assert "shim" in message and "before it attached" in message, message
    if verb == "exec":
        # the guest process went with it: nothing runs out of reach of kill and exec
        table = cli.ok("ps", "early")
        assert "sleep 2000" not in table and "sleep 1000" in table, table
        assert state(cli, "early")["status"] == "running"
        cli.ok("delete", "--force", "early")
    else:
        # create failed and undid itself: no container, no VM
        assert "does not exist" in cli("state", "early").stderr
        assert not (cli.root / "early").exists()
    ids.remove("early")


# --- 5: the id lock: concurrent and killed creates -------------------------------------------


def start_cli(cli: Cli, *args: str) -> tuple[subprocess.Popen[str], Any]:
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by ended())
    return subprocess.Popen([COCOON, "--root", str(cli.root), *args], stdout=err, stderr=err,
                            stdin=subprocess.DEVNULL, text=True), err


def ended(running: tuple[subprocess.Popen[str], Any], timeout: float = 120) -> tuple[int, str]:
    proc, err = running
    code = proc.wait(timeout=timeout)
    err.seek(0)
    text = str(err.read())
    err.close()
    assert "Traceback" not in text and text.count("\n") <= 1, text
    return code, text


def wait_for(what: str, condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.005)


def test_a_create_killed_in_the_middle_leaves_an_id_the_next_command_handles(
        cli: Cli, tmp_path: Path, ids: list[str]) -> None:
    """Two creates of one id at once: one is refused in one line; the other, killed while its
    VM boots, leaves a container that `state` says is stopped (not `creating` for ever), that
    `create` refuses, and that `delete --force` removes with its VM; the id is free again."""
    ids.append("race")
    bundle = make_bundle(tmp_path / "b", ["sleep", "1000"])
    first = start_cli(cli, "create", "--bundle", str(bundle), "race")
    wait_for("state", lambda: (cli.root / "race" / "state.json").exists())
    code, message = ended(start_cli(cli, "create", "--bundle", str(bundle), "race"))
    assert code != 0 and "container race already exists" in message, message
    vm = Path(json.loads((cli.root / "race" / "state.json").read_text())["vm_dir"])
    wait_for("monitor", lambda: (vm / "monitor.pid").exists())
    first[0].kill()
    code, _ = ended(first)
    assert code == -signal.SIGKILL
    assert state(cli, "race")["status"] == "stopped"
    code, message = ended(start_cli(cli, "create", "--bundle", str(bundle), "race"))
    assert code != 0 and "container race already exists" in message, message
    cli.ok("delete", "--force", "race")
    assert "does not exist" in cli("state", "race").stderr
    assert not vm.exists()
    cli.ok("create", "--bundle", str(bundle), "race")
    assert state(cli, "race")["status"] == "created"
    cli.ok("delete", "--force", "race")
    ids.remove("race")


def test_a_delete_during_a_create_waits_for_it_and_leaves_nothing(
        cli: Cli, tmp_path: Path, ids: list[str]) -> None:
    ids.append("race2")
    bundle = make_bundle(tmp_path / "b", ["sleep", "1000"])
    creating = start_cli(cli, "create", "--bundle", str(bundle), "race2")
    wait_for("id", lambda: (cli.root / "race2").exists(), timeout=60)
    deleting = start_cli(cli, "delete", "--force", "race2")
    created, message = ended(creating)
    deleted, said = ended(deleting)
    # the delete waited for the create (whichever way it went) and then removed the container
    assert created == 0 or message, message
    assert deleted == 0 or "does not exist" in said, said
    assert not (cli.root / "race2").exists()
    assert "does not exist" in cli("state", "race2").stderr
    ids.remove("race2")


# --- 6: the agent (the guest's PID 1) outlives every signal a container sends it -------------


def test_signals_to_the_agent_from_a_container_in_the_guests_pid_namespace(
        vm_root: Path) -> None:
    """The runtime refuses a config without a pid namespace (it means the host's), so this
    container is made through the agent API, as a pod's would be if it shared the guest's."""
    import asyncio
    import dataclasses

    from cocoon.oci import convert
    from cocoon.oci.spec import parse_spec
    from cocoon.protocols.gen import agent_pb2
    from cocoon.runtime.guestspec import guest_spec
    from tests.vm.container_kit import GuestSandbox, container_spec

    names = ["INT", "TERM", "HUP", "USR1", "USR2", "QUIT", "ALRM", "PIPE", "ABRT", "SEGV",
             "TRAP", "PWR", "TSTP", "STOP", "CONT", "KILL"]
    script = ("test \"$(cat /proc/1/comm)\" != sh || exit 9; "
              + "; ".join(f"kill -{name} 1 && echo {name}" for name in names)
              + "; kill -34 1; kill -64 1; true")
    box = GuestSandbox(vm_root, sandbox_id="sig")
    box.start()
    try:
        async def scenario() -> tuple[str, str]:
            client = await box.connect()
            try:
                parsed = parse_spec(container_spec(["sh", "-c", script]), source="test")
                gspec = guest_spec(parsed, box.rootfs("sig1"), box.share, "sig1")
                assert gspec.linux is not None
                gspec = dataclasses.replace(gspec, linux=dataclasses.replace(
                    gspec.linux, namespaces=tuple(n for n in gspec.linux.namespaces
                                                  if n.type != "pid")))
                await client.agent.create_container("sig1", convert.spec_to_proto(gspec))
                pending = asyncio.create_task(box.output_of(client, "sig1"))
                await asyncio.sleep(0)
                await box.call(client, "StartContainer",
                               agent_pb2.StartContainerRequest(container_id="sig1"))
                result = await pending
                assert result.status == 0, result
                await asyncio.sleep(1.0)
                await client.agent.health(timeout=10.0)  # still the same agent, still up
                after = await box.run("after", container_spec(["echo", "still here"]))
                await box.remove(client, "sig1")
                return result.out, after.out
            finally:
                await client.close()

        sent, after = asyncio.run(scenario())
        assert sent.split() == names  # each one reached PID 1 (kill succeeded)
        assert after.strip() == "still here"
    finally:
        box.stop()


# --- 7: a relative mount destination ------------------------------------------------------------


def test_a_relative_destination_is_mounted_from_the_root(cli: Cli, tmp_path: Path,
                                                        ids: list[str]) -> None:
    """runtime-spec: deprecated, relative to "/" (runc 1.2 reads it so; 1.1 warned)."""
    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "scratch", "type": "tmpfs", "source": "tmpfs"})

    run_detached(cli, tmp_path, ids, "rel", ["sleep", "1000"], edit)
    assert " /scratch tmpfs " in cli.ok("exec", "rel", "cat", "/proc/mounts")


# --- 7: bad input refused by name --------------------------------------------------------------


def one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    message = result.stderr.strip()
    assert result.returncode != 0, result
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_a_memory_limit_bigger_than_the_host_is_refused(cli: Cli, tmp_path: Path) -> None:
    def edit(spec: dict[str, object]) -> None:
        spec["linux"]["resources"] = {"memory": {"limit": 1 << 40}}  # type: ignore[index]

    bundle = make_bundle(tmp_path / "big", ["true"], edit)
    one_line_failure(cli("create", "--bundle", str(bundle), "big"),
                     "linux.resources.memory.limit", "MemTotal")
    assert cli("state", "big").returncode != 0


def test_an_id_too_long_for_a_file_name_is_refused_in_one_line(cli: Cli,
                                                              tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "long", ["true"])
    cid = "x" * 256
    for args in (["create", "--bundle", str(bundle), cid], ["state", cid], ["delete", cid],
                 ["delete", "--force", cid]):
        one_line_failure(cli(*args), "at most 255")


def test_a_qemu_killed_during_create_is_reported_without_a_file_that_is_gone(
        cli: Cli, tmp_path: Path, vm_root: Path, ids: list[str]) -> None:
    bundle = make_bundle(tmp_path / "boot", ["true"])
    ids.append("boot")
    with open(tmp_path / "err", "w+") as err:
        create = subprocess.Popen([*cli_argv(cli), "create", "--bundle", str(bundle), "boot"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err)
        try:
            killed = 0
            deadline = time.monotonic() + 120
            while create.poll() is None and time.monotonic() < deadline:
                # every QEMU of this create (a clone that dies is replaced by a cold boot)
                for pid in processes(f"{vm_root}/", "qemu-system"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
                time.sleep(0.02)
            assert killed and create.wait(timeout=10) != 0
        finally:
            create.kill()
            create.wait()
        err.seek(0)
        message = err.read().strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "exited" in message, message
    for word in message.replace("(", " ").replace(")", " ").split():
        if word.startswith("/"):
            assert os.path.exists(word.rstrip(":,;")), f"the error names {word}: {message}"
    assert cli("state", "boot").returncode != 0


def cli_argv(cli: Cli) -> list[str]:
    from tests.framework.cli import COCOON

    return [COCOON, "--root", str(cli.root)]


def processes(needle: str, program: str) -> list[int]:
    """Pids of the processes running `program` whose command line holds `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if args and program in args[0].decode(errors="replace") and \
                    any(needle.encode() in a for a in args):
                found.append(int(entry))
    return found


# --- 5: a full state root ----------------------------------------------------------------------


@pytest.fixture
def small_root(leak_check: object) -> Iterator[Path]:
    """A 512 KiB tmpfs as the state root (unmounted at the end)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="cfull-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0711", "tmpfs", str(root)],
                   check=True)
    leak_check.watch_state_root(root)  # type: ignore[attr-defined]
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=False)
        root.rmdir()


def fill(root: Path, leave_pages: int = 0) -> Path:
    """Fill the filesystem of `root` (then free `leave_pages` pages again)."""
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            try:
                os.write(fd, bytes(4096))
            except OSError:
                break
    finally:
        os.close(fd)
    if leave_pages:
        os.truncate(filler, max(0, filler.stat().st_size - 4096 * leave_pages))
    return filler


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_state_root_fails_cleanly_and_leaves_no_half_made_id(
        small_root: Path, tmp_path: Path) -> None:
    cli = Cli(small_root)
    bundle = make_bundle(tmp_path / "b", ["sleep", "1000"])
    made = ["full"]
    try:
        for pages in (0, 1):  # full, and one page free: refused before any VM starts
            filler = fill(small_root, pages)
            one_line_failure(cli("create", "--bundle", str(bundle), "full"),
                             "container full: cannot write", str(small_root))
            assert sorted(p.name for p in small_root.iterdir()) == ["filler"]
            filler.unlink()
        # what a create killed between its mkdir and its first state leaves
        (small_root / "full").mkdir()
        one_line_failure(cli("state", "full"), "never completely created", "delete --force")
        one_line_failure(cli("create", "--bundle", str(bundle), "full"),
                         "already exists but was never completely created")
        cli.ok("delete", "--force", "full")
        assert not (small_root / "full").exists()
        # re-created; the root full and the reserve spent: start is refused before the
        # process starts, and says so in one line
        cli.ok("create", "--bundle", str(bundle), "full")
        filler = fill(small_root)
        (small_root / "full" / ".reserve").unlink()
        fill(small_root)
        one_line_failure(cli("start", "full"), "container full: cannot write its state")
        assert state(cli, "full")["status"] == "created"
        assert "sleep 1000" not in cli.ok("ps", "full")
        filler.unlink()
        cli.ok("delete", "--force", "full")
        # again; the root fills up under it: start still records what it did (the reserve)
        cli.ok("create", "--bundle", str(bundle), "full")
        filler = fill(small_root)
        cli.ok("start", "full")
        assert state(cli, "full")["status"] == "running"
        # and, the reserve spent and the root full again, a change whose state cannot be
        # written is refused before it is made
        fill(small_root)
        one_line_failure(cli("pause", "full"), "container full: cannot write its state")
        assert state(cli, "full")["status"] == "running"
        assert cli.ok("exec", "full", "echo", "unfrozen").strip() == "unfrozen"
        # an exec --detach whose shim cannot be recorded does not stay behind unrecorded
        one_line_failure(cli("exec", "--detach", "full", "sleep", "3000"),
                         "container full: cannot write its state")
        deadline = time.monotonic() + 30
        while "sleep 3000" in cli.ok("ps", "full") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "sleep 3000" not in cli.ok("ps", "full")
        filler.unlink()
        cli.ok("delete", "--force", "full")
        made.clear()
        assert list(small_root.iterdir()) == []
    finally:
        with contextlib.suppress(OSError):
            (small_root / "filler").unlink()
        for cid in made:
            cli("delete", "--force", cid)
