"""The host's side of a config for the guest: what each volume asks of the share and what the
log says it cannot do; mount points made on the host when the guest cannot make them (a
read-only rootfs; a user namespace's root, which virtiofsd does not grant its capabilities)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConfigError
from cocoon.linux import syscalls as sc
from cocoon.oci.default import default_spec
from cocoon.oci.spec import Mount, parse_spec
from cocoon.runtime import guestspec
from cocoon.sandbox.share import SLAVE, Share


class RecordingShare(Share):
    """Says where it would bind, and with what propagation, without mounting anything."""

    def __init__(self) -> None:
        super().__init__(Path("/share"))
        self.volumes: list[tuple[int, tuple[int, ...]]] = []

    def expose_rootfs(self, container_id: str, rootfs: Path, readonly: bool = False) -> str:
        return "/guest/rootfs"

    def expose_mount(self, container_id: str, index: int, source: Path, readonly: bool,
                     propagation: Sequence[int] = (SLAVE,)) -> str:
        self.volumes.append((index, tuple(propagation)))
        return f"/guest/mounts/{index}"


def test_each_volume_is_bound_with_the_propagation_its_options_ask(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "rootfs").mkdir()
    data = default_spec()
    base = len(data["mounts"])
    data["mounts"] += [
        {"destination": "/a", "type": "bind", "source": str(tmp_path), "options": ["rbind"]},
        {"destination": "/b", "type": "bind", "source": str(tmp_path),
         "options": ["rbind", "rshared"]},
        {"destination": "/c", "type": "bind", "source": str(tmp_path),
         "options": ["rbind", "rprivate"]},
    ]
    share = RecordingShare()
    spec = guestspec.guest_spec(parse_spec(data), tmp_path / "rootfs", share, "c1")
    assert share.volumes == [(base, (SLAVE,)), (base + 1, (SLAVE, SLAVE)),
                             (base + 2, (SLAVE, sc.MS_PRIVATE | sc.MS_REC))]
    assert [m.source for m in spec.mounts[base:]] == [f"/guest/mounts/{base + i}"
                                                      for i in range(3)]
    # only the shared volume is said to be one way
    assert [r.getMessage() for r in caplog.records] == [
        f"mounts[{base + 1}] /b: shared propagation stops at the VM: mounts made in the "
        f"container do not reach the host's {tmp_path}"]


def volume(options: tuple[str, ...]) -> Mount:
    return Mount(destination="/v", type="bind", source="/srv/v", options=options)


@pytest.mark.parametrize("options", [("rbind", "shared"), ("bind", "rshared")])
def test_a_shared_volume_is_noted_as_one_way(options: tuple[str, ...]) -> None:
    note = guestspec.one_way_note(3, volume(options))
    assert note is not None and note.startswith("mounts[3] /v: shared propagation stops")


@pytest.mark.parametrize("options", [(), ("rbind", "rslave"), ("rbind", "private")])
def test_other_volumes_are_not(options: tuple[str, ...]) -> None:
    assert guestspec.one_way_note(0, volume(options)) is None


MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _spec(userns: bool, **linux: Any) -> Any:
    data = default_spec()
    data["root"]["readonly"] = False
    data["mounts"].append({"destination": "/run/.containerenv", "type": "bind",
                           "source": "/etc/hostname", "options": ["bind"]})
    if userns:
        data["linux"]["namespaces"].append({"type": "user"})
        data["linux"]["uidMappings"] = MAP
        data["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    data["linux"].update(linux)
    return parse_spec(data)


def test_the_mapped_root_is_the_host_id_of_container_id_0() -> None:
    assert guestspec._mapped_root(_spec(True)) == (100000, 200000)
    assert guestspec._mapped_root(_spec(False)) is None
    shifted = [{"containerID": 1, "hostID": 5000, "size": 10}]
    assert guestspec._mapped_root(_spec(True, uidMappings=shifted)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_mount_points_of_a_user_namespace_are_made_and_owned_by_its_root(
        tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir(mode=0o555)
    spec = _spec(True)
    guestspec._make_mount_points(spec, rootfs, guestspec._mapped_root(spec))
    made = rootfs / "run" / ".containerenv"
    assert made.is_file()
    for path in (made, made.parent, rootfs / "proc", rootfs / "dev"):
        assert (path.stat().st_uid, path.stat().st_gid) == (100000, 200000), path
    assert rootfs.stat().st_uid == 0  # what existed is left as it was


def test_a_bad_mapping_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    spec = _spec(True, uidMappings=[{"containerID": 0, "hostID": 1, "size": 0}])
    with pytest.raises(ConfigError, match=r"config\.json: linux\.uidMappings\[0\]: size is 0"):
        guestspec.check(spec, tmp_path)


def test_a_joined_user_namespace_with_mappings_has_a_mapped_root_too() -> None:
    data = default_spec()
    data["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"})
    data["linux"]["uidMappings"] = MAP
    data["linux"]["gidMappings"] = MAP
    assert guestspec._mapped_root(parse_spec(data)) == (100000, 100000)


def test_a_relative_destination_is_taken_from_the_root_and_said_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """runtime-spec: a relative destination is deprecated and relative to "/" (as runc 1.2)."""
    (tmp_path / "rootfs").mkdir()
    data = default_spec()
    data["mounts"].append({"destination": "data/../cache", "type": "tmpfs", "source": "tmpfs"})
    spec = guestspec.guest_spec(parse_spec(data), tmp_path / "rootfs", RecordingShare(), "c1")
    assert spec.mounts[-1].destination == "/cache"
    assert all(m.destination.startswith("/") for m in spec.mounts)
    index = len(data["mounts"]) - 1
    assert [r.getMessage() for r in caplog.records] == [
        f"config.json: mounts[{index}].destination 'data/../cache' is relative (deprecated): "
        "taken as /cache"]


def _with_limit(limit: int) -> Any:
    data = default_spec()
    data["linux"]["resources"] = {"memory": {"limit": limit}}
    return parse_spec(data)


def test_a_vm_bigger_than_the_host_is_refused_by_name(tmp_path: Path) -> None:
    from cocoon.runtime import sizing

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        8000000 kB\nMemFree:   100 kB\n")  # 7812 MiB
    sizing.check_memory(_with_limit(4 << 30), str(meminfo))  # 4 GiB fits
    for limit in (256 << 30, 1 << 40):
        with pytest.raises(ConfigError) as caught:
            sizing.check_memory(_with_limit(limit), str(meminfo))
        message = str(caught.value)
        assert "linux.resources.memory.limit" in message and "MemTotal 7812 MiB" in message
        assert f"a limit of {limit >> 20} MiB" in message and "\n" not in message
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(ConfigError, match="MemTotal"):
        guestspec.check(_with_limit(1 << 50), tmp_path / "rootfs")  # the host's own bound


def _tree(root: Path) -> list[tuple[str, int, float]]:
    """Every entry under `root` with its owner and mtime: what "untouched" is checked by."""
    found = [(str(root), root.lstat().st_uid, root.lstat().st_mtime)]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            found.append((os.path.join(dirpath, name), st.st_uid, st.st_mtime))
    return sorted(found)


@pytest.mark.parametrize("link", ["/etc", "../../../../../../../etc", "HOST"])
def test_mount_points_never_land_outside_a_rootfs_whose_etc_climbs_out(
        tmp_path: Path, link: str) -> None:
    """A read-only rootfs with a user namespace (both make the host create mount points)
    whose /etc points at the host's /etc, or up and out to it, or at another host
    directory: nothing is made or chowned there, and the other mount points still are."""
    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "hostname").write_text("host\n")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").symlink_to(str(host) if link == "HOST" else link)
    data = default_spec()
    data["root"]["readonly"] = True
    data["mounts"] += [
        {"destination": "/etc/hostname", "type": "bind", "source": str(host / "hostname"),
         "options": ["bind"]},
        {"destination": "/etc/cocoon-made/x", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/../../etc/cocoon-up", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/data", "type": "tmpfs", "source": "tmpfs"},
    ]
    data["linux"]["namespaces"].append({"type": "user"})
    data["linux"]["uidMappings"] = MAP
    data["linux"]["gidMappings"] = MAP
    spec = parse_spec(data)
    before = (_tree(host), sorted(os.listdir("/etc")), os.stat("/etc").st_mtime)
    guestspec._make_mount_points(spec, rootfs, guestspec._mapped_root(spec))
    assert (_tree(host), sorted(os.listdir("/etc")), os.stat("/etc").st_mtime) == before
    assert (rootfs / "data").is_dir() and (rootfs / "proc").is_dir()
    assert (rootfs / "etc").is_symlink()


def test_a_symlink_inside_the_rootfs_is_followed_inside_it(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "real").mkdir(parents=True)
    (rootfs / "var").symlink_to("/real")  # absolute: the rootfs's /real
    data = default_spec()
    data["root"]["readonly"] = True
    data["mounts"].append({"destination": "/var/run/x", "type": "tmpfs", "source": "tmpfs"})
    guestspec._make_mount_points(parse_spec(data), rootfs, None)
    assert (rootfs / "real" / "run" / "x").is_dir()
    assert not Path("/real").exists()
