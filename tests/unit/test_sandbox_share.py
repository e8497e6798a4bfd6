"""The share's host-side propagation for a volume (a pure mapping from its options), and
the binds it makes, which no symlink in the share takes out of it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cocoon.errors import SandboxError
from cocoon.linux import syscalls as sc
from cocoon.sandbox.share import SLAVE, Share, detach_all, host_propagation, mounts_under


def test_a_volume_is_a_slave_of_its_source_whatever_it_shares() -> None:
    assert host_propagation(["rbind"]) == (SLAVE,)
    assert host_propagation(["rbind", "rshared"]) == (SLAVE, sc.MS_SLAVE | sc.MS_REC)
    assert host_propagation(["bind", "slave", "ro"]) == (SLAVE, sc.MS_SLAVE)


def test_private_and_unbindable_cut_the_volume_from_its_source() -> None:
    assert host_propagation(["rbind", "rprivate"]) == (SLAVE, sc.MS_PRIVATE | sc.MS_REC)
    assert host_propagation(["private"]) == (SLAVE, sc.MS_PRIVATE)
    assert host_propagation(["runbindable"]) == (SLAVE, sc.MS_PRIVATE | sc.MS_REC)
    assert host_propagation(["unbindable"]) == (SLAVE, sc.MS_PRIVATE)


def test_options_apply_in_order() -> None:
    assert host_propagation(["rprivate", "rshared"]) == (
        SLAVE, sc.MS_PRIVATE | sc.MS_REC, sc.MS_SLAVE | sc.MS_REC)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_a_guest_planted_symlink_in_the_share_takes_no_bind_out_of_it(tmp_path: Path) -> None:
    """The guest can write in the share: a `<share>/<id>` it made a symlink to a host
    directory before the host exposes container <id> is refused, and nothing is made or
    mounted in that directory."""
    host = tmp_path / "host"
    host.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "marker").write_text("rootfs")
    share = Share(tmp_path / "share")
    share.create()
    try:
        (share.root / "planted").symlink_to(host)
        (share.root / "up").symlink_to("..")
        for container_id in ("planted", "up"):
            with pytest.raises(SandboxError, match=r"cannot make .* in the share") as err:
                share.expose_rootfs(container_id, rootfs)
            assert "\n" not in str(err.value)
        assert os.listdir(host) == []
        assert not mounts_under(host) and not mounts_under(tmp_path / "rootfs")
    finally:
        share.destroy()
    assert not mounts_under(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_a_bind_source_that_is_a_symlink_is_followed_as_runc_does(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "data").write_text("real")
    (tmp_path / "volumes").mkdir()
    (tmp_path / "volumes" / "v").symlink_to("../real")
    share = Share(tmp_path / "share")
    share.create()
    try:
        guest = share.expose_mount("c1", 0, tmp_path / "volumes" / "v", readonly=True)
        assert guest.endswith("/c1/mounts/0")
        bound = share.root / "c1" / "mounts" / "0"
        assert (bound / "data").read_text() == "real"
        with pytest.raises(OSError):
            (bound / "new").write_text("x")  # read-only on the host too
    finally:
        share.destroy()
    assert not mounts_under(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_a_read_only_volume_is_read_only_in_virtiofsds_namespace_too(tmp_path: Path) -> None:
    """virtiofsd's mount namespace is a slave of the host's made before the bind: a remount
    after attaching would not reach its copy, a read-only detached tree does."""
    import subprocess
    (tmp_path / "volume").mkdir()
    share = Share(tmp_path / "share")
    share.create()
    bound = share.root / "c1" / "mounts" / "0"
    (share.root / "c1").mkdir()
    peer = subprocess.Popen(
        ["unshare", "-m", "--propagation", "slave", "sh", "-c",
         f"echo ready; read go; touch {bound}/new 2>/dev/null && echo wrote || echo refused"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None and peer.stdout.readline() == "ready\n"
        share.expose_mount("c1", 0, tmp_path / "volume", readonly=True)
        out, _ = peer.communicate("go\n", timeout=10)
        assert out.strip() == "refused"
        assert os.listdir(tmp_path / "volume") == []
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        share.destroy()
    assert not mounts_under(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_binds_land_where_the_monitor_mounted_the_share(tmp_path: Path) -> None:
    """The sandbox's monitor runs in a mount namespace that is no peer of the caller's (podman
    runs the runtime of a container with a user namespace in one of its own): the share's binds
    are made, and taken away, in the monitor's namespace, from a tree cloned in the caller's."""
    sandbox_dir = tmp_path / "sandbox"
    share = Share(sandbox_dir / "shared")
    share.root.mkdir(parents=True)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "marker").write_text("the container's\n")
    # the caller sees the rootfs through a mount of its own, as an engine prepares it
    subprocess.run(["mount", "-t", "tmpfs", "engine", str(rootfs)], check=True)
    (rootfs / "marker").write_text("the engine's mount\n")
    monitor = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$0/shared" "$0/shared" && mount --make-shared "$0/shared" && '
         'echo ready && exec python3 -c "import time; time.sleep(60)" "$0"', str(sandbox_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert monitor.stdout is not None and monitor.stdout.readline() == "ready\n"
        (sandbox_dir / "monitor.pid").write_text(f"{monitor.pid}\n")

        def in_monitor(*command: str) -> str:
            return subprocess.run(["nsenter", f"--mount=/proc/{monitor.pid}/ns/mnt", *command],
                                  capture_output=True, text=True, check=True).stdout

        guest_path = share.expose_rootfs("c1", rootfs)
        assert guest_path.endswith("/c1/rootfs")
        target = share.root / "c1" / "rootfs"
        assert in_monitor("cat", str(target / "marker")) == "the engine's mount\n"
        assert str(target) not in mounts_under(share.root)  # nothing of it in the caller's
        share.remove_container("c1")
        assert str(target) not in in_monitor("cat", "/proc/self/mountinfo")
        assert not (share.root / "c1").exists()
    finally:
        monitor.kill()
        monitor.wait()
        detach_all(sandbox_dir)  # what a failed run left in the caller's namespace
        subprocess.run(["umount", str(rootfs)], check=True)
