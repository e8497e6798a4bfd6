"""`cocoon.Sandbox`, through the public API only, with real VMs.

Each test runs in a private VM root with the leak check (`vm_root`): whatever a sandbox left
(a QEMU, virtiofsd, monitor, mount, sandbox directory or host cgroup) fails the test. Sandboxes
start the way the runtime's do (templates when the host has them), so they are cheap enough
that most tests start their own.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from cocoon import Mount, Sandbox
from cocoon.errors import (
    CalledProcessError,
    ImageError,
    OutOfMemoryError,
    ProcessTimeoutError,
    SandboxError,
    SandboxTimeoutError,
)
from tests.framework.ociimage import Entry, write_archive

pytestmark = pytest.mark.vm

PARALLEL = 10


def vm_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []


def test_output_status_input_and_check(vm_root: Path) -> None:
    with Sandbox(env={"GREETING": "hello"}) as sandbox:
        result = sandbox.run(["sh", "-c", 'echo "$GREETING $(hostname)"; echo oops >&2; '
                              "exit 3"])
        assert (result.returncode, result.stdout, result.stderr) == (3, b"hello sandbox\n",
                                                                    b"oops\n")
        data = os.urandom(3 << 20)  # several stdin writes and output reads
        assert sandbox.run(["cat"], input=data).stdout == data
        text = sandbox.run(["tr", "a-z", "A-Z"], input="shout", text=True)
        assert text.stdout == "SHOUT"
        assert sandbox.run(["sh", "-c", "read x; echo ${x:-eof}"]).stdout == b"eof\n"
        assert sandbox.run(["pwd"], cwd="/tmp", env={"X": "1"}).stdout == b"/tmp\n"
        assert sandbox.run(["ls", "/sys/class/net"]).stdout == b"lo\n"  # no network
        with pytest.raises(CalledProcessError) as failed:
            sandbox.run(["sh", "-c", "echo bad input >&2; exit 2"], check=True)
        assert failed.value.returncode == 2 and failed.value.stderr == b"bad input\n"
        assert "bad input" in str(failed.value)
        with pytest.raises(SandboxError, match="'no-such-program' not found"):
            sandbox.run(["no-such-program"])
        assert sandbox.run(["true"]).returncode == 0  # still usable after each failure


def test_popen_streams_signals_and_a_terminal(vm_root: Path) -> None:
    with Sandbox() as sandbox:
        process = sandbox.popen(["sh", "-c", "while read line; do echo got $line; done; "
                                 "echo done >&2"])
        assert process.stdout is not None and process.stderr is not None
        for word in (b"one", b"two"):
            process.write(word + b"\n")
            assert process.stdout.readline() == b"got " + word + b"\n"
        process.close_stdin()
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == b"done\n"
        sleeper = sandbox.popen(["sleep", "600"])
        with pytest.raises(ProcessTimeoutError):
            sleeper.wait(timeout=0.5)
        sleeper.send_signal(signal.SIGTERM)
        assert sleeper.wait(timeout=30) == 128 + signal.SIGTERM
        tty = sandbox.popen(["sh", "-c", "tty; stty size"], terminal=True)
        assert tty.stderr is None and tty.stdout is not None
        tty.resize(33, 101)
        out = tty.stdout.read()
        assert tty.wait() == 0
        assert out.startswith(b"/dev/pts/") and b"33 101" in out


def test_a_process_timeout_kills_the_process_and_the_sandbox_lives_on(vm_root: Path) -> None:
    with Sandbox() as sandbox:
        started = time.monotonic()
        with pytest.raises(ProcessTimeoutError, match="did not end within 1"):
            sandbox.run(["sh", "-c", "echo partial; sleep 600"], timeout=1)
        assert time.monotonic() - started < 30
        assert "sleep 600" not in sandbox.run(["ps"]).stdout.decode()
        assert sandbox.run(["echo", "alive"]).stdout == b"alive\n"


def test_the_sandbox_timeout_kills_the_vm_and_cleans_up(vm_root: Path) -> None:
    started = time.monotonic()
    sandbox = Sandbox(timeout=5)
    with pytest.raises(SandboxTimeoutError, match="timeout of 5 s expired"), sandbox:
        sandbox.run(["sleep", "600"])
    assert time.monotonic() - started < 120
    assert vm_dirs(vm_root) == []  # and the leak check finds no process, mount or cgroup
    with pytest.raises(SandboxError, match="not running"):
        sandbox.run(["true"])


def test_the_memory_limit_ends_in_an_oom_error(vm_root: Path) -> None:
    with Sandbox(memory_mib=32) as sandbox:
        hog = ["awk", 'BEGIN { s = "x"; while (1) s = s s }']  # doubles until killed
        with pytest.raises(OutOfMemoryError, match="out-of-memory killer") as oom:
            sandbox.run(hog)
        assert oom.value.returncode == 128 + signal.SIGKILL
        within = ["sh", "-c", "x=$(head -c 4000000 /dev/zero | tr '\\0' a); echo ${#x}"]
        assert sandbox.run(within).stdout == b"4000000\n"
        limit = sandbox.run(["cat", "/sys/fs/cgroup/memory.max"]).stdout
        assert int(limit) == 32 << 20


def test_files_go_in_and_out_byte_for_byte(vm_root: Path, tmp_path: Path) -> None:
    blob = os.urandom(2 << 20) + bytes(range(256))
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    (project / "src" / "deep" / "data.bin").write_bytes(blob)
    (project / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (project / "run.sh").chmod(0o755)
    (project / "link").symlink_to("run.sh")
    with Sandbox() as sandbox:
        sandbox.write_file("/tmp/blob", blob, mode=0o600)
        assert sandbox.read_file("/tmp/blob") == blob
        assert sandbox.run(["stat", "-c", "%a %s", "/tmp/blob"]).stdout == \
            f"600 {len(blob)}\n".encode()
        sandbox.copy_in(project, "/work")
        assert sandbox.run(["/work/link"]).stdout == b"ran\n"
        sandbox.run(["sh", "-c", "cd /work && sha256sum src/deep/data.bin > sums && "
                     "mkdir out && echo report > out/report.txt"], check=True)
        sandbox.copy_out("/work", tmp_path / "back")
        sandbox.copy_out("/tmp/blob", tmp_path / "blob")
        with pytest.raises(SandboxError, match="cannot read /missing"):
            sandbox.read_file("/missing")
    back = tmp_path / "back"
    assert (back / "src" / "deep" / "data.bin").read_bytes() == blob
    assert (back / "out" / "report.txt").read_text() == "report\n"
    assert os.readlink(back / "link") == "run.sh"
    assert (back / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "blob").read_bytes() == blob


def test_an_exception_in_the_with_block_tears_the_vm_down(vm_root: Path) -> None:
    with pytest.raises(KeyError, match="boom"), Sandbox() as sandbox:
        assert vm_dirs(vm_root)
        sandbox.run(["true"])
        raise KeyError("boom")
    assert vm_dirs(vm_root) == []


def test_ten_sandboxes_in_parallel_from_threads(vm_root: Path) -> None:
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def job(index: int) -> None:
        try:
            with Sandbox(memory_mib=64) as sandbox:
                out = sandbox.run(["sh", "-c", f"echo {index}; cat /proc/sys/kernel/random/"
                                   "boot_id"], check=True, timeout=600).stdout
                results[index] = out
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not errors, errors
    assert sorted(results) == list(range(PARALLEL))
    assert all(out.split()[0] == str(i).encode() for i, out in results.items())
    assert len({out.split()[1] for out in results.values()}) == PARALLEL  # ten guests
    assert vm_dirs(vm_root) == []


def test_images_from_a_directory_and_from_an_oci_archive(vm_root: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "motd").write_text("my own root\n")
    with Sandbox(rootfs) as sandbox:
        # the image has no shell: the sandbox's own busybox moves the files
        assert sandbox.read_file("/etc/motd") == b"my own root\n"
        sandbox.write_file("/etc/motd", "changed")
        with pytest.raises(SandboxError, match="'sh' not found"):
            sandbox.run(["sh"])
    assert (rootfs / "etc" / "motd").read_text() == "my own root\n"  # never written to
    layers = [[Entry("etc", "dir", mode=0o755), Entry("etc/old", data=b"old"),
               Entry("etc/kept", data=b"kept")],
              [Entry("etc/.wh.old"), Entry("etc/new", data=b"new\n")]]
    archive = write_archive(tmp_path / "image.tar", layers, env=["FROM_IMAGE=yes"])
    with Sandbox(archive, mounts=[Mount(tmp_path / "rootfs", "/host")],
                 network=True) as sandbox:
        nics = sandbox.run(["/dev/.cocoon/busybox", "ls", "/sys/class/net"]).stdout.split()
        assert len(nics) > 1 and b"lo" in nics  # a user-mode NIC beside the loopback
        ls = ["/dev/.cocoon/busybox", "ls", "/etc"]
        assert sandbox.run(ls).stdout.split() == [b"kept", b"new"]
        env = sandbox.run(["/dev/.cocoon/busybox", "env"]).stdout.split()
        assert b"FROM_IMAGE=yes" in env
        assert sandbox.read_file("/host/etc/motd") == b"my own root\n"
        with pytest.raises(SandboxError, match="Read-only"):
            sandbox.write_file("/host/etc/motd", "no")


def test_a_bad_image_fails_by_name_and_leaves_nothing(vm_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=f"image {tmp_path}/nope does not exist"):
        Sandbox(tmp_path / "nope").start()
    (tmp_path / "junk.tar").write_bytes(b"junk")
    with pytest.raises(ImageError, match=r"junk\.tar: not an OCI archive"), \
            Sandbox(tmp_path / "junk.tar"):
        pass
    assert vm_dirs(vm_root) == []
