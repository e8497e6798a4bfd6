"""`cocoon checkpoint` and `cocoon restore` against real VMs: CRIU in the guest.

A counter is checkpointed (its VM and every host process of it gone afterwards), deleted, and
restored into a new VM from the images: it goes on counting from where it stopped, and its
output reaches the restored container's shim. The refusals are one line, with nothing left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.framework.cli import COCOON, Cli

pytestmark = pytest.mark.integration

COUNTER = "i=0; while true; do i=$((i+1)); echo $i; echo $i > /tmp/count; sleep 0.2; done"


def make_bundle(path: Path, args: list[str], terminal: bool = False) -> Path:
    from cocoon.guest import assets
    from cocoon.oci.default import default_spec

    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(assets.ensure_busybox_rootfs(), path / "rootfs", symlinks=True)
    spec = default_spec()
    spec["process"]["terminal"] = terminal
    spec["process"]["args"] = args
    spec["root"] = {"path": "rootfs", "readonly": False}
    (path / "config.json").write_text(json.dumps(spec))
    return path


def detached(root: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`cocoon ARGS` whose stdout (the container's, kept by its shim) goes to `out`; stderr
    to a file too (a pipe would stay open in the shim)."""
    with out.open("ab") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.run([COCOON, "--root", str(root), *args], stdout=stdout,
                              stderr=stderr, stdin=subprocess.DEVNULL, timeout=300, check=False)
        stderr.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr.read())


def numbers(out: Path) -> list[int]:
    return [int(line) for line in out.read_text().split() if line.isdigit()]


def wait_for_numbers(out: Path, count: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = numbers(out)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} numbers in {out}: {out.read_text()!r}")


def alive(pid: int) -> bool:
    """The process runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def one_line_refusal(result: subprocess.CompletedProcess[str], match: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], result.stderr


def test_counter_continues_after_checkpoint_and_restore(state_root: Path, tmp_path: Path) -> None:
    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", COUNTER])
    images = tmp_path / "images"
    cid = "ckpt"
    before, after = tmp_path / "before.out", tmp_path / "after.out"
    run = detached(state_root, before, "run", "--detach", "--bundle", str(bundle), cid)
    assert run.returncode == 0, run.stderr
    try:
        wait_for_numbers(before, 5)
        state = json.loads(cli.ok("state", cid))
        vm_dir = Path(json.loads((state_root / cid / "state.json").read_text())["vm_dir"])
        monitor = int(json.loads((state_root / cid / "state.json").read_text())["monitor_pid"])
        shim = int(state["pid"])
        started = time.monotonic()
        cli.ok("checkpoint", "--image-path", str(images), cid)
        print(f"checkpoint took {time.monotonic() - started:.2f} s, images "
              f"{sum(f.stat().st_size for f in images.iterdir()) >> 10} KiB")
        stopped_at = numbers(before)[-1]
        # the VM and every host process of the container are gone; the state says stopped
        assert json.loads(cli.ok("state", cid))["status"] == "stopped"
        assert not alive(monitor), Path(f"/proc/{monitor}/cmdline").read_bytes()
        assert not alive(shim), Path(f"/proc/{shim}/cmdline").read_bytes()
        assert not vm_dir.exists()
        assert (images / "descriptors.json").is_file() and any(images.glob("pages-*.img"))
        time.sleep(1.0)
        assert numbers(before)[-1] == stopped_at  # nothing counts any more
        cli.ok("delete", cid)

        started = time.monotonic()
        restore = detached(state_root, after, "restore", "--detach", "--image-path",
                           str(images), "--bundle", str(bundle), cid)
        assert restore.returncode == 0, restore.stderr
        print(f"restore took {time.monotonic() - started:.2f} s")
        assert json.loads(cli.ok("state", cid))["status"] == "running"
        resumed = wait_for_numbers(after, 3)
        # from where it stopped, not from 1: the first number after the restore follows the
        # last one before the checkpoint
        assert stopped_at < resumed[0] <= stopped_at + 2, (stopped_at, resumed)
        assert resumed == list(range(resumed[0], resumed[0] + len(resumed)))
        # the file the shell writes agrees (read again if caught between truncate and write)
        for _ in range(5):
            text = cli.ok("exec", cid, "cat", "/tmp/count").strip()
            if text:
                break
        assert int(text) >= resumed[-1]
    finally:
        cli("delete", "--force", cid)


def test_checkpoint_and_restore_refusals(state_root: Path, tmp_path: Path) -> None:
    cli = Cli(state_root)
    images = tmp_path / "images"
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", COUNTER])
    one_line_refusal(cli("checkpoint", "--image-path", str(images), "nosuch"),
                     "container nosuch does not exist")
    one_line_refusal(cli("restore", "--image-path", str(tmp_path / "missing"), "--bundle",
                         str(bundle), "r1"), "does not exist")
    images.mkdir()
    one_line_refusal(cli("restore", "--image-path", str(images), "--bundle", str(bundle),
                         "r1"), "holds no checkpoint")
    one_line_refusal(cli("checkpoint", "--pre-dump", "--image-path", str(images), "r1"),
                     "--pre-dump is not supported")
    assert not (state_root / "r1").exists()
    cid = "created"
    cli.ok("create", "--bundle", str(bundle), cid)
    try:
        one_line_refusal(cli("checkpoint", "--image-path", str(images), cid),
                         f"cannot checkpoint container {cid}: it is created")
        assert json.loads(cli.ok("state", cid))["status"] == "created"
    finally:
        cli("delete", "--force", cid)
    assert not any(images.iterdir())
    # images CRIU cannot read: the restore fails in the new VM, in one line, and undoes itself
    (images / "descriptors.json").write_text('["/dev/null", "pipe:[1]", "pipe:[2]"]')
    (images / "inventory.img").write_bytes(b"not an image")
    one_line_refusal(cli("restore", "--image-path", str(images), "--bundle", str(bundle),
                         "r2"), "criu restore of container r2 failed")
    assert cli("state", "r2").returncode != 0 and not (state_root / "r2").exists()
