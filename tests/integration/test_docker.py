"""Docker 20.10 driving Cocoon through containerd-shim-runc-v2 and runc's command line.

The tests start their own dockerd (own data root, exec root and socket, no iptables rules) with
`--add-runtime cocoon=<cocoon>`, import the busybox rootfs Cocoon builds as an image, and run
containers with `--runtime cocoon`: without a network (`--bridge=none`), or on a bridge of the
test's own with a published port (docker-proxy forwards it).
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.sandbox.share import detach_all
from tests.integration.ptydriver import PtySession

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("dockerd") is None,
                                                          reason="docker.io is not installed")]

IMAGE = "localhost/cocoon-busybox:latest"


class Docker:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "docker.sock"

    def argv(self, *args: str) -> list[str]:
        return ["docker", "-H", f"unix://{self.socket}", *args]

    def __call__(self, *args: str, timeout: float = 180.0,
                 input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), capture_output=True, timeout=timeout,
                                input=input, check=False)
        return subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))


@contextlib.contextmanager
def dockerd(base: Path, *network: str) -> Iterator[Docker]:
    """A private dockerd with the busybox image imported; `network`: its network options."""
    from cocoon.guest import assets

    cocoon = Path(sys.executable).parent / "cocoon"
    log = open(base / "dockerd.log", "wb")  # noqa: SIM115 - lives as long as dockerd
    daemon = subprocess.Popen(
        ["dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "-H", f"unix://{base / 'docker.sock'}", "--pidfile", str(base / "docker.pid"),
         "--iptables=false", *network, "--add-runtime", f"cocoon={cocoon}"],
        stdout=log, stderr=log, start_new_session=True)
    d = Docker(base)
    try:
        deadline = time.monotonic() + 60
        while d("info").returncode != 0:
            assert daemon.poll() is None, (base / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not come up"
            time.sleep(0.5)
        archive = base / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(assets.ensure_busybox_rootfs(), arcname=".")
        imported = d("import", str(archive), IMAGE)
        assert imported.returncode == 0, imported.stderr
        yield d
    finally:
        ids = d("ps", "-aq").stdout.split()
        if ids:
            d("rm", "-f", *ids, timeout=300)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        detach_all(base)  # dockerd's overlay store and netns mounts


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    with dockerd(tmp_path_factory.mktemp("docker"), "--bridge=none") as d:
        yield d


def test_run_rm_prints_and_returns_the_exit_code(docker: Docker) -> None:
    result = docker("run", "--runtime", "cocoon", "--rm", "--network", "none", IMAGE,
                    "sh", "-c", "echo hello from $(uname -r); exit 6")
    assert result.returncode == 6, result.stderr
    assert result.stdout.startswith("hello from ")
    assert result.stdout.strip().removeprefix("hello from ") != platform.release()


def test_detached_exec_logs_stop_rm(docker: Docker) -> None:
    name = "cocoon-docker-detached"
    run = docker("run", "--runtime", "cocoon", "-d", "--name", name, "--network", "none",
                 IMAGE, "sh", "-c",
                 "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 60
        while "ready" not in docker("logs", name).stdout:
            assert time.monotonic() < deadline, "no output in docker logs"
            time.sleep(0.5)
        exec_ = docker("exec", name, "sh", "-c", "echo from exec; exit 4")
        assert exec_.returncode == 4, exec_.stderr
        assert exec_.stdout == "from exec\n"
        stop = docker("stop", "--time", "20", name)
        assert stop.returncode == 0, stop.stderr
        assert docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert "bye" in docker("logs", name).stdout
    finally:
        rm = docker("rm", "-f", name)
    assert rm.returncode == 0, rm.stderr


def test_update_changes_the_memory_limit_in_the_guest(docker: Docker) -> None:
    """`docker update -m` sends the whole resources object, zeros for what it leaves alone
    (cpu quota and period 0): the update applies the memory limit and leaves the cpu be (the
    zeros were written as cpu.max "0 100000", which the kernel refused)."""
    name = "cocoon-docker-update"
    run = docker("run", "--runtime", "cocoon", "-d", "--name", name, "--network", "none",
                 "-m", "64m", IMAGE, "sleep", "300")
    assert run.returncode == 0, run.stderr
    limit = "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max"
    try:
        before = docker("exec", name, "sh", "-c", limit)
        assert before.stdout.strip() == str(64 << 20), before.stderr
        update = docker("update", "-m", "128m", "--memory-swap", "256m", name)
        assert update.returncode == 0, update.stderr
        after = docker("exec", name, "sh", "-c", limit)
        assert after.stdout.strip() == str(128 << 20), after.stderr
    finally:
        rm = docker("rm", "-f", name)
    assert rm.returncode == 0, rm.stderr


def test_interactive_tty(docker: Docker) -> None:
    session = PtySession(docker.argv("run", "--runtime", "cocoon", "--rm", "-it",
                                     "--network", "none", IMAGE, "sh"))
    try:
        session.expect("# ", timeout=120)
        session.send("echo typed-$((6*7))\r")
        out = session.expect("typed-42")
        assert "echo typed-$((6*7))" in out
        session.send("exit 3\r")
        assert session.wait() == 3
    finally:
        session.close()


BRIDGE = "cctestdock0"
GATEWAY = "172.31.250.1"


def test_the_default_bridge_network_and_a_published_port(tmp_path: Path) -> None:
    """dockerd's own bridge network: Docker moves the container's veth into its namespace from
    its prestart hook, after the VM started; the interface is carried into the VM then."""
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        with dockerd(tmp_path, f"--bridge={BRIDGE}") as d:
            ping = d("run", "--rm", "--runtime", "cocoon", IMAGE, "ping", "-c", "1", "-W", "5",
                     GATEWAY)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "1 packets received" in ping.stdout
            web = d("run", "-d", "--name", "web", "--runtime", "cocoon", "-p", "18080:8080",
                    IMAGE, "sh", "-c", "mkdir -p /www && echo served-from-the-vm > "
                                       "/www/index.html && exec httpd -f -p 8080 -h /www")
            assert web.returncode == 0, web.stderr
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:18080/index.html",
                                                timeout=5) as reply:
                        assert reply.read().strip() == b"served-from-the-vm"
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the published port never answered"
                    time.sleep(0.5)
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], check=False)


def test_output_written_just_before_exit_all_arrives(docker: Docker) -> None:
    """5 MB written, then exit at once: every byte reaches Docker before the exit status."""
    result = docker("run", "--runtime", "cocoon", "--rm", "--network", "none", IMAGE,
                    "sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x; echo END; exit 4")
    assert result.returncode == 4, result.stderr
    assert result.stdout == "x" * 5_000_000 + "END\n"
