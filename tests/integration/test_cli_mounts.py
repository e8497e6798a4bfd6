"""Bind mounts and their propagation options, through the `cocoon` CLI against real VMs.

Every propagation option (`shared`, `slave`, `private`, `unbindable` and their recursive forms)
must show in the container's /proc/self/mountinfo as under runc; a mount the host makes under
a volume after the container started reaches the container when the volume asks for it
(`rshared`, `rslave`: virtio-fs announces it as a submount), not when it asks for private
propagation; and the container's going unmounts nothing of the host's.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocoon.linux import syscalls as sc
from tests.framework.cli import Cli
from tests.vm.container_kit import make_bundle

pytestmark = pytest.mark.integration

PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable",
                "runbindable")


def propagation_fields(mountinfo: str) -> dict[str, set[str]]:
    """Mount point -> its optional fields ("shared", "master", "unbindable", ...), ids
    dropped."""
    found: dict[str, set[str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        optional = fields[6:fields.index("-")]
        found[fields[4]] = {field.split(":")[0] for field in optional}
    return found


def test_propagation_fields_are_read_from_mountinfo() -> None:
    info = ("57 48 0:34 / /mnt/a rw,relatime shared:1 master:4 - virtiofs none rw\n"
            "58 48 0:35 / /mnt/b rw,relatime - virtiofs none rw\n"
            "59 48 0:36 / /mnt/c rw,relatime unbindable - virtiofs none rw\n")
    assert propagation_fields(info) == {"/mnt/a": {"shared", "master"}, "/mnt/b": set(),
                                        "/mnt/c": {"unbindable"}}


def with_volumes(source: Path, propagations: tuple[str, ...]) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"] += [{"destination": f"/mnt/{p}", "type": "bind", "source": str(source),
                            "options": ["rbind", p]} for p in propagations]
    return edit


@pytest.fixture
def cli(state_root: Path) -> Cli:
    return Cli(state_root)


# what runc shows for each option: the guest's share is shared, as a host's root is under
# systemd, so a volume is a slave of it until an option says otherwise
EXPECTED = {
    "shared": {"shared", "master"}, "rshared": {"shared", "master"},
    "slave": {"master"}, "rslave": {"master"},
    "private": set(), "rprivate": set(),
    "unbindable": {"unbindable"}, "runbindable": {"unbindable"},
}


@pytest.mark.vm
def test_every_propagation_option_shows_in_the_container(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "volume"
    source.mkdir()
    bundle = make_bundle(tmp_path / "b", ["cat", "/proc/self/mountinfo"],
                         with_volumes(source, PROPAGATIONS))
    seen = propagation_fields(cli.ok("run", "--bundle", str(bundle), "prop"))
    assert {p: seen.get(f"/mnt/{p}") for p in PROPAGATIONS} == EXPECTED


@contextlib.contextmanager
def shared_tmpfs(path: Path) -> Iterator[Path]:
    """A tmpfs at `path` that is a shared mount (as every mount is under systemd), so that
    mounts made beneath it propagate to its binds."""
    path.mkdir()
    sc.mount("tmpfs", str(path), "tmpfs", 0, "size=1m")
    try:
        sc.mount(None, str(path), None, sc.MS_SHARED)
        yield path
    finally:
        sc.umount2(str(path), sc.MNT_DETACH)


@pytest.mark.vm
def test_a_host_mount_under_a_volume_reaches_the_container_after_start(
        cli: Cli, tmp_path: Path) -> None:
    late, cut = ("rshared", "rslave"), ("private", "rprivate")
    with shared_tmpfs(tmp_path / "volume") as source:
        (source / "late").mkdir()
        bundle = make_bundle(tmp_path / "b", ["sleep", "1000"],
                             with_volumes(source, late + cut))
        cli.ok("run", "--detach", "--bundle", str(bundle), "late")
        try:
            sc.mount("tmpfs", str(source / "late"), "tmpfs", 0, "size=1m")
            try:
                (source / "late" / "file").write_text("from the host\n")
                for propagation in late:
                    shown = _read_eventually(cli, "late", f"/mnt/{propagation}/late/file")
                    assert shown == "from the host\n", propagation
                mounts = propagation_fields(cli.ok("exec", "late", "cat",
                                                   "/proc/self/mountinfo"))
                assert {f"/mnt/{p}/late" for p in late} <= mounts.keys()
                for propagation in cut:  # as under runc: a private volume is cut off
                    assert f"/mnt/{propagation}/late" not in mounts
                    assert cli.ok("exec", "late", "ls", "-A", f"/mnt/{propagation}/late") == ""
            finally:
                cli.ok("delete", "--force", "late")
            # the container's going unmounted nothing of the host's
            assert os.path.ismount(source / "late")
            assert (source / "late" / "file").read_text() == "from the host\n"
        finally:
            with contextlib.suppress(OSError):
                sc.umount2(str(source / "late"), sc.MNT_DETACH)
        assert json.loads(cli.ok("list", "--format", "json")) == []


def _read_eventually(cli: Cli, container_id: str, path: str, timeout: float = 10.0) -> str:
    """What `cat path` prints in the container, once it succeeds (the guest's cached lookup
    of the directory may take the attribute timeout, a second, to notice the new mount)."""
    deadline = time.monotonic() + timeout
    while True:
        result = cli("exec", container_id, "cat", path)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return result.stdout
        time.sleep(0.5)
