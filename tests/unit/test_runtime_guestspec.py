"""The host's side of a config for the guest: mount points made on the host when the guest
cannot make them (a read-only rootfs; a user namespace's root, which virtiofsd does not grant
its capabilities)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConfigError
from cocoon.oci.default import default_spec
from cocoon.oci.spec import parse_spec
from cocoon.runtime import guestspec

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
