"""podman 4.3 driving Cocoon through runc's command line (`--runtime .../cocoon`).

Every container runs in its own VM; the image is the busybox image Cocoon builds itself, loaded
into a private podman storage. podman here needs `--ulimit` (the sandbox caps rlimits) and
cgroupfs (no systemd).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.sandbox.share import detach_all
from tests.integration.ptydriver import PtySession

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("podman") is None,
                                                          reason="podman is not installed")]

IMAGE = "localhost/cocoon-busybox:latest"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


class Podman:
    def __init__(self, base: Path, runtime: str) -> None:
        self.base = base
        self.runtime = runtime
        self.global_args = [
            "podman", "--root", str(base / "storage"), "--runroot", str(base / "run"),
            "--runtime", runtime, "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--tmpdir", str(base / "tmp")]

    def argv(self, *args: str) -> list[str]:
        return [*self.global_args, *args]

    def __call__(self, *args: str, timeout: float = 180.0, check: bool = False,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), capture_output=True, text=True,
                                timeout=timeout, input=input, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stderr}")
        return result


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    from cocoon.guest import assets

    base = tmp_path_factory.mktemp("podman")
    (base / "tmp").mkdir()
    p = Podman(base, str(Path(sys.executable).parent / "cocoon"))
    archive = assets.write_busybox_oci_archive(base / "busybox.tar")
    p("load", "-i", str(archive), check=True)
    yield p
    p("rm", "--all", "--force", timeout=300)
    detach_all(base)  # podman keeps its overlay store mounted


def test_run_rm_prints_and_returns_the_exit_code(podman: Podman) -> None:
    result = podman("run", "--rm", *ULIMITS, IMAGE, "sh", "-c",
                    "echo hello from $(uname -r); exit 5")
    assert result.returncode == 5, result.stderr
    guest_kernel = result.stdout.strip().removeprefix("hello from ")
    assert result.stdout.startswith("hello from ")
    assert guest_kernel != platform.release()  # the container ran on the guest's kernel


def test_detached_container_exec_logs_stop_rm(podman: Podman) -> None:
    name = "cocoon-detached"
    run = podman("run", "-d", "--name", name, *ULIMITS, IMAGE, "sh", "-c",
                 "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 60
        while "ready" not in podman("logs", name).stdout:
            assert time.monotonic() < deadline, "no output in podman logs"
            time.sleep(0.5)
        exec_ = podman("exec", name, "sh", "-c", "echo from exec; cat /proc/1/cmdline; exit 3")
        assert exec_.returncode == 3, exec_.stderr
        assert exec_.stdout.startswith("from exec\nsh")
        assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() \
            == "running"
        stop = podman("stop", "--time", "20", name)
        assert stop.returncode == 0, stop.stderr
        assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert "bye" in podman("logs", name).stdout
    finally:
        rm = podman("rm", "--force", name)
    assert rm.returncode == 0, rm.stderr


def test_pause_unpause_and_top(podman: Podman) -> None:
    name = "cocoon-pause"
    assert podman("run", "-d", "--name", name, *ULIMITS, IMAGE, "sh", "-c",
                  "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; mv /tmp/c /tmp/count; "
                  "sleep 0.1; done"
                  ).returncode == 0
    try:
        top = podman("top", name)
        assert top.returncode == 0, top.stderr
        assert "PID" in top.stdout
        assert podman("pause", name).returncode == 0
        assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() \
            == "paused"
        assert podman("unpause", name).returncode == 0
        count1 = podman("exec", name, "cat", "/tmp/count").stdout
        time.sleep(1.0)
        count2 = podman("exec", name, "cat", "/tmp/count").stdout
        assert int(count2) > int(count1)  # running again after unpause
    finally:
        podman("rm", "--force", name)


def test_interactive_tty_echoes_what_is_typed(podman: Podman) -> None:
    session = PtySession(podman.argv("run", "--rm", "-it", *ULIMITS, IMAGE, "sh"))
    try:
        session.expect("# ", timeout=120)
        session.send("echo typed-$((6*7))\r")
        session.expect("typed-42")
        session.resize(33, 101)  # conmon relays the new size; the guest's tty follows
        deadline = time.monotonic() + 30
        while True:
            session.send("stty size\r")
            try:
                session.expect("33 101", timeout=3)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the window size did not reach the guest"
        session.send("tty && echo is-a-tty; exit 3\r")
        out = session.expect("is-a-tty")
        assert "echo typed-$((6*7))" in out  # the guest's terminal echoed the input
        assert session.wait() == 3
    finally:
        session.close()


def test_podman_build_runs_its_run_steps_in_vms(podman: Podman, tmp_path: Path) -> None:
    """buildah's RUN steps ask for ambient capabilities without inheritable ones; the build
    must run each step in a VM as runc would run it on the host."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"FROM {IMAGE}\n"
        "RUN echo built in $(uname -r) > /built && id -u > /uid\n"
        "RUN cat /built /uid\n")
    tag = "localhost/cocoon-built:latest"
    result = podman("build", "--runtime", podman.runtime, *ULIMITS, "--isolation", "oci",
                    "-t", tag, str(context), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    try:
        built = podman("run", "--rm", *ULIMITS, tag, "cat", "/built", "/uid")
        assert built.returncode == 0, built.stderr
        assert built.stdout.startswith("built in ") and platform.release() not in built.stdout
        assert built.stdout.split()[-1] == "0"
    finally:
        podman("rmi", "--force", tag)


PROBE = "cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/ipc; " \
        "readlink /proc/self/ns/uts; hostname"


def test_container_namespaces_are_shared_in_one_vm(podman: Podman) -> None:
    """`--ipc/--uts/--network container:NAME`: the namespaces of another container, joined in
    that container's VM (the same guest: the same boot id)."""
    first = podman("run", "-d", "--name", "shared-a", *ULIMITS, IMAGE, "sleep", "1000")
    assert first.returncode == 0, first.stderr
    try:
        second = podman("run", "--rm", *ULIMITS, "--ipc", "container:shared-a", "--uts",
                        "container:shared-a", "--network", "container:shared-a", IMAGE,
                        "sh", "-c", PROBE)
        assert second.returncode == 0, second.stderr
        seen_by_a = podman("exec", "shared-a", "sh", "-c", PROBE)
        assert seen_by_a.returncode == 0, seen_by_a.stderr
        assert second.stdout.split() == seen_by_a.stdout.split()
    finally:
        podman("rm", "--force", "--time", "0", "shared-a", timeout=120)


@pytest.fixture(scope="module")
def pause_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """podman's infra image is not reachable here: a pause image built from the busybox one."""
    context = tmp_path_factory.mktemp("pause")
    (context / "Containerfile").write_text(f'FROM {IMAGE}\nCMD ["sleep", "100000"]\n')
    pause = "localhost/cocoon-pause:latest"
    built = podman("build", "-q", "-t", pause, str(context), timeout=300)
    assert built.returncode == 0, built.stderr
    yield pause
    podman("rmi", "--force", pause)


def test_a_pod_is_one_vm(podman: Podman, pause_image: str) -> None:
    """A podman pod's infra container and members: one VM, its IPC and UTS namespaces shared."""
    pod = podman("pod", "create", "--name", "cocoon-pod", "--infra-image", pause_image)
    assert pod.returncode == 0, pod.stderr
    try:
        member = podman("run", "-d", "--pod", "cocoon-pod", "--name", "member", *ULIMITS, IMAGE,
                        "sleep", "1000")
        assert member.returncode == 0, member.stderr
        other = podman("run", "--rm", "--pod", "cocoon-pod", *ULIMITS, IMAGE, "sh", "-c", PROBE)
        assert other.returncode == 0, other.stderr
        seen = podman("exec", "member", "sh", "-c", PROBE)
        assert other.stdout.split() == seen.stdout.split(), (other.stdout, seen.stdout)
        assert other.stdout.split()[-1] == "cocoon-pod"
    finally:
        podman("pod", "rm", "--force", "--time", "0", "cocoon-pod", timeout=180)


def test_a_pod_with_a_user_namespace_is_one_vm(podman: Podman, pause_image: str) -> None:
    """`pod create --uidmap`: podman runs the runtime of each of its containers in a mount
    namespace of its own, so a member's rootfs reaches the VM only if its bind is made where
    the infra container's VM mounted its share (the member found an empty root, "mounts[0]
    /proc: Permission denied"). The member runs in the pod's VM and user namespace, its files
    its own."""
    pod = "cocoon-userns-pod"
    created = podman("pod", "create", "--name", pod, "--infra-image", pause_image,
                     "--uidmap", "0:100000:65536")
    assert created.returncode == 0, created.stderr
    try:
        member = podman("run", "-d", "--pod", pod, "--name", "userns-member", *ULIMITS, IMAGE,
                        "sleep", "1000")
        assert member.returncode == 0, member.stderr
        infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}")
        probe = PROBE + "; cat /proc/self/uid_map; ls /bin/busybox"
        seen = podman("exec", "userns-member", "sh", "-c", probe)
        assert seen.returncode == 0, seen.stderr
        from_infra = podman("exec", infra.stdout.strip(), "sh", "-c", probe)
        assert from_infra.returncode == 0, from_infra.stderr
        assert seen.stdout.split() == from_infra.stdout.split(), (seen.stdout, from_infra.stdout)
        assert seen.stdout.split()[4:7] == ["0", "100000", "65536"]
        assert seen.stdout.split()[-1] == "/bin/busybox"
    finally:
        removed = remove_past_the_shm_bug(podman, "pod", "rm", "--force", "--time", "0", pod)
        assert removed.returncode == 0, removed.stderr


def test_a_privileged_container_loads_kernel_modules_on_demand(podman: Podman) -> None:
    """The guest kernel loads what a privileged workload asks for (here `bridge`, `veth`) from
    its whole module tree, which the image does not carry (no module was loaded before)."""
    result = podman("run", "--rm", "--privileged", *ULIMITS, IMAGE, "sh", "-c",
                    "grep -c '^bridge ' /proc/modules; brctl addbr br0 && ip -o link show br0 "
                    "&& ip link add v0 type veth peer name v1 && ip -o link show v0 && "
                    "grep -E '^(bridge|veth) ' /proc/modules | cut -d' ' -f1 | sort")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0"
    assert "br0:" in lines[1] and " v0@" in lines[2]
    assert lines[-2:] == ["bridge", "veth"]


def test_the_containers_cgroup_holds_its_vm_and_feeds_podman_stats(podman: Podman) -> None:
    """podman (cgroupfs) asks for /libpod_parent/libpod-ID: it exists on the host with the
    limits, holds the VM's QEMU, is what `podman stats` reads, and goes with the container."""
    name = "cocoon-cgroup"
    run = podman("run", "-d", "--name", name, "--memory", "64m", "--cpu-shares", "512",
                 *ULIMITS, IMAGE, "sleep", "300")
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    memory = Path(f"/sys/fs/cgroup/memory/libpod_parent/libpod-{cid}")
    try:
        held = memory.joinpath("cgroup.procs").read_text().split()
        exes = {Path(f"/proc/{pid}/exe").resolve().name for pid in held
                if Path(f"/proc/{pid}").exists()}
        assert any(exe.startswith("qemu-system") for exe in exes), exes
        cpu = Path(f"/sys/fs/cgroup/cpu/libpod_parent/libpod-{cid}/cpu.shares")
        assert cpu.read_text().strip() == "512"
        stats = podman("stats", "--no-stream", "--format", "{{.MemUsage}}", name, timeout=60)
        assert stats.returncode == 0 and "/ 67.11MB" in stats.stdout, (stats.stdout,
                                                                         stats.stderr)
    finally:
        podman("rm", "--force", "--time", "0", name)
    assert not memory.exists()


def test_uidmap_runs_the_container_in_a_user_namespace(podman: Podman) -> None:
    """`--uidmap` (gids follow): root inside is host 100000; the image's files, owned by root
    in the image, are shown to the container through podman's mapping as its root's."""
    name = "cocoon-uidmap"
    report = "id -u; id -g; cat /proc/self/uid_map; stat -c %u /bin"
    run = podman("run", "-d", "--name", name, "--uidmap", "0:100000:65536", *ULIMITS, IMAGE,
                 "sh", "-c", f"{report}; echo done; while true; do sleep 0.1; done")
    assert run.returncode == 0, run.stderr
    expected = ["0", "0", "0 100000 65536", "0"]
    try:
        deadline = time.monotonic() + 60
        while "done" not in (logs := podman("logs", name).stdout):
            assert time.monotonic() < deadline, "no output in podman logs"
            time.sleep(0.5)
        assert [" ".join(line.split()) for line in logs.splitlines()] == [*expected, "done"]
        exec_ = podman("exec", name, "sh", "-c", report)
        assert exec_.returncode == 0, exec_.stderr
        assert [" ".join(line.split()) for line in exec_.stdout.splitlines()] == expected
    finally:
        rm = remove_uidmap_container(podman, name)
    assert rm.returncode == 0, rm.stderr


def remove_uidmap_container(podman: Podman, name: str) -> subprocess.CompletedProcess[str]:
    """`podman rm --force` of a `--uidmap` container, past a podman 4.3 bug runc meets too.

    podman starts conmon of a container with a user namespace in a mount namespace of its own,
    and conmon's exit command (`podman container cleanup`) unmounts the container's
    userdata/shm there, not in the host's, yet records the storage as unmounted: a `podman rm`
    that comes after it fails with EBUSY on userdata/shm (seen with runc as well: a container
    that exits by itself, then `podman rm`). That mount is podman's own and still in the host's
    namespace: unmount it as podman meant to and remove again."""
    return remove_past_the_shm_bug(podman, "rm", "--force", name)


def remove_past_the_shm_bug(podman: Podman, *rm: str) -> subprocess.CompletedProcess[str]:
    """`podman <rm...>`, unmounting the userdata/shm podman left busy (see above) as often as
    one stops the removal (a pod's containers may each have one)."""
    result = podman(*rm, timeout=180)
    for _ in range(4):
        busy = re.search(r"unlinkat (\S+/userdata/shm): device or resource busy", result.stderr)
        if result.returncode == 0 or not busy:
            break
        subprocess.run(["umount", busy.group(1)], check=False)
        result = podman(*rm, timeout=180)
    return result


def test_output_written_just_before_exit_all_arrives(podman: Podman) -> None:
    """5 MB written, then exit at once: every byte reaches podman before the exit status."""
    result = podman("run", "--rm", *ULIMITS, IMAGE, "sh", "-c",
                    "head -c 5000000 /dev/zero | tr '\\0' x; echo END; exit 4")
    assert result.returncode == 4, result.stderr
    assert result.stdout == "x" * 5_000_000 + "END\n"


def test_cp_reaches_the_running_containers_files_never_the_hosts(podman: Podman,
                                                                   tmp_path: Path) -> None:
    """podman cp into and out of a running container joins the container's pid's mount
    namespace: the copy lands in the container (seen by it in the guest) and nothing of the
    host's / is written or read (it wrote the host's / before)."""
    name = "cocoon-cp"
    unique = f"cocoon-cp-{os.getpid()}-{time.monotonic_ns()}"
    host_twin = Path("/tmp") / f"{unique}.host"
    host_twin.write_text("the host's, not the container's\n")
    source = tmp_path / "in.txt"
    source.write_text("copied in\n")
    assert podman("run", "-d", "--name", name, *ULIMITS, IMAGE, "sh", "-c",
                  f"echo made in the guest > /tmp/{unique}.out; sleep 300").returncode == 0
    try:
        copy_in = podman("cp", str(source), f"{name}:/tmp/{unique}.in")
        assert copy_in.returncode == 0, copy_in.stderr
        assert not Path(f"/tmp/{unique}.in").exists()  # not the host's /tmp
        seen = podman("exec", name, "cat", f"/tmp/{unique}.in")
        assert seen.stdout == "copied in\n", seen.stderr
        deadline = time.monotonic() + 30
        while podman("exec", name, "test", "-e", f"/tmp/{unique}.out").returncode != 0:
            assert time.monotonic() < deadline, "the guest never wrote its file"
            time.sleep(0.5)
        out = tmp_path / "out.txt"
        assert podman("cp", f"{name}:/tmp/{unique}.out", str(out)).returncode == 0
        assert out.read_text() == "made in the guest\n"
        twin = podman("cp", f"{name}:/tmp/{unique}.host", str(tmp_path / "twin.txt"))
        assert twin.returncode != 0  # the container has no such file; the host's is not read
        assert not (tmp_path / "twin.txt").exists()
    finally:
        podman("rm", "--force", "--time", "0", name)
        host_twin.unlink()
