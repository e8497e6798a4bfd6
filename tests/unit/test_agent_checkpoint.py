"""The guest's CRIU command lines and the checks around them (agent/checkpoint.py), without a
VM: what dump and restore are asked, which stdio pipes are replaced, which paths the host may
name, and how a CRIU failure reads. The VM test (tests/integration/test_cli_checkpoint.py) runs
them for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon.agent import checkpoint
from cocoon.agent.container import ContainerError
from cocoon.agent.rootfs import Mount
from cocoon.protocols.gen import guest_pb2

MOUNTS = [Mount("/proc", "proc", "proc"),
          Mount("/data", "bind", "/run/cocoon/shared/c/mounts/0", ("rbind", "rw")),
          Mount("/etc/hosts", "", "/run/cocoon/shared/c/mounts/1", ("bind", "ro"))]


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def test_dump_names_each_bind_mount_by_its_destination() -> None:
    options = guest_pb2.CriuOptions(tcp_established=True)
    args = checkpoint.dump_args(7, MOUNTS, options, "/run/cocoon/i", "/run/cocoon/w",
                                leave_running=True)
    assert args[:5] == [checkpoint.CRIU, "dump", "-t", "7", "-D"]
    assert pairs(args, "--ext-mount-map") == ["/data:/data", "/etc/hosts:/etc/hosts"]
    assert "--leave-running" in args and "--tcp-established" in args
    assert "--file-locks" not in args and "--freeze-cgroup" not in args
    assert pairs(args, "-W") == ["/run/cocoon/w"]
    frozen = checkpoint.dump_args(7, [], options, "/i", "/w", False, frozen="/sys/fs/cgroup/c")
    assert pairs(frozen, "--freeze-cgroup") == ["/sys/fs/cgroup/c"]
    assert "--leave-running" not in frozen


def test_restore_maps_mounts_to_the_new_sources_and_inherits_the_pipes() -> None:
    args = checkpoint.restore_args("/run/cocoon/shared/c/rootfs", MOUNTS,
                                   guest_pb2.CriuOptions(file_locks=True), "/i", "/w",
                                   [(11, "pipe:[100]"), (12, "pipe:[101]")])
    assert pairs(args, "--root") == ["/run/cocoon/shared/c/rootfs"]
    assert pairs(args, "--ext-mount-map") == ["/data:/run/cocoon/shared/c/mounts/0",
                                              "/etc/hosts:/run/cocoon/shared/c/mounts/1"]
    assert pairs(args, "--inherit-fd") == ["fd[11]:pipe:[100]", "fd[12]:pipe:[101]"]
    assert "--restore-sibling" in args and "--restore-detached" in args
    assert pairs(args, "--pidfile") == ["/w/restore.pid"] and "--file-locks" in args


def test_only_pipes_are_inherited_each_once() -> None:
    # stdout and stderr on one pipe (2>&1), stdin from /dev/null
    found = checkpoint.inherited(["/dev/null", "pipe:[5]", "pipe:[5]"], [20, 21, 22])
    assert found == [(21, "pipe:[5]")]
    assert checkpoint.inherited(["pipe:[1]", "pipe:[2]", "pipe:[3]"], [7, 8, 9]) == [
        (7, "pipe:[1]"), (8, "pipe:[2]"), (9, "pipe:[3]")]


@pytest.mark.parametrize("image_dir", ["/etc", "/run/cocoon", "/run/cocoon/../etc", "relative",
                                       ""])
def test_image_directories_outside_the_host_area_are_refused(image_dir: str) -> None:
    with pytest.raises(ContainerError) as err:
        checkpoint._image_dirs(guest_pb2.CriuOptions(image_dir=image_dir))
    assert err.value.code == 3  # INVALID_ARGUMENT
    assert "\n" not in str(err.value)


def test_a_criu_failure_reads_as_its_last_errors(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text("(00.1) info\n(00.2) Error (a.c:1): first\n(00.3) Error (b.c:2): second\n"
                   "(00.4) Error (c.c:3): third\n(00.5) Error (d.c:4): Dumping FAILED.\n")
    assert checkpoint.criu_error(log) == ("(00.3) Error (b.c:2): second | (00.4) Error "
                                          "(c.c:3): third | (00.5) Error (d.c:4): Dumping "
                                          "FAILED.")
    assert checkpoint.criu_error(tmp_path / "missing.log") == "no log"


def test_mount_points_are_made_in_the_rootfs_for_the_top_mounts(tmp_path: Path) -> None:
    source_file = tmp_path / "hosts"
    source_file.write_text("")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    mounts = [Mount("/dev", "tmpfs", "tmpfs"), Mount("/dev/pts", "devpts", "devpts"),
              Mount("/run", "tmpfs", "tmpfs"),
              Mount("/etc/hosts", "bind", str(source_file), ("rbind",))]
    assert [m.destination for m in checkpoint.top_mount_points(mounts)] == [
        "/dev", "/run", "/etc/hosts"]
    checkpoint.make_mount_points(str(rootfs), mounts)
    assert (rootfs / "dev").is_dir() and (rootfs / "run").is_dir()
    assert (rootfs / "etc/hosts").is_file() and not (rootfs / "dev/pts").exists()
    (rootfs / "evil").symlink_to("/")  # a symlink in the rootfs is resolved inside it
    checkpoint.make_mount_points(str(rootfs), [Mount("/evil/made", "tmpfs", "tmpfs")])
    assert (rootfs / "made").is_dir() and not Path("/made").exists()
