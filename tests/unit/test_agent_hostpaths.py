"""The agent holds the host's paths to what it gave: CopyFile beneath the agent's area, storage
mount points there too, a container's root and bind sources inside the storage they lie in;
`..` and symlinks that climb out are refused and nothing outside is touched."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cocoon.agent import hostpaths, service
from cocoon.agent.container import ContainerError
from cocoon.agent.hostpaths import PathRefused
from cocoon.agent.process import Reaper
from cocoon.protocols.gen import agent_pb2, kata_oci_pb2


@pytest.fixture
def area(tmp_path: Path) -> Path:
    (tmp_path / "area").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "area"


def copy(path: str, area: Path, data: bytes = b"x") -> None:
    hostpaths.copy_file(path, data, 0, file_mode=0o600, dir_mode=0o700, uid=os.getuid(),
                        gid=os.getgid(), area=str(area))


def test_copy_file_writes_beneath_the_area(area: Path) -> None:
    copy(f"{area}/new/dir/file", area, b"data")
    assert (area / "new" / "dir" / "file").read_bytes() == b"data"
    assert (area / "new" / "dir" / "file").stat().st_mode & 0o777 == 0o600
    (area / "inner").symlink_to("new")  # a symlink that stays inside is followed
    copy(f"{area}/inner/dir/other", area)
    assert (area / "new" / "dir" / "other").exists()


@pytest.mark.parametrize("name", ["../outside/file", "new/../../outside/file", "up/file",
                                  "abs/file", "last", "", "/etc/passwd-cocoon"])
def test_copy_file_refuses_what_climbs_out_and_touches_nothing(area: Path, name: str) -> None:
    outside = area.parent / "outside"
    (area / "up").symlink_to("../outside")
    (area / "abs").symlink_to(str(outside))
    (area / "last").symlink_to(str(outside / "file"))
    path = name if name.startswith("/") else f"{area}/{name}"
    with pytest.raises(PathRefused) as err:
        copy(path, area)
    assert "\n" not in str(err.value)
    assert os.listdir(outside) == []
    assert not Path("/etc/passwd-cocoon").exists()


def test_storage_mount_points_and_clean_paths() -> None:
    assert hostpaths.in_area("/run/cocoon/shared", "m") == "/run/cocoon/shared"
    for bad in ("/run/cocoon", "/run/cocoon/../../etc", "/etc", "run/cocoon/x",
                "/run/cocoon//x", "/run/cocoon/./x", "/run/cocoonx"):
        with pytest.raises(PathRefused):
            hostpaths.in_area(bad, "m")


def test_sources_stay_inside_their_storage(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "c1" / "rootfs").mkdir(parents=True)
    (share / "c1" / "rootfs" / "esc").symlink_to("/etc")
    (share / "c1" / "rootfs" / "up").symlink_to("../../..")
    (share / "c1" / "rootfs" / "in").symlink_to("../rootfs")
    roots = [str(share)]
    hostpaths.stays_within(f"{share}/c1/rootfs", roots, "root.path")
    hostpaths.stays_within(f"{share}/c1/rootfs/in", roots, "source")
    hostpaths.stays_within(f"{share}/c1/missing", roots, "source")  # reported where used
    hostpaths.stays_within("/proc", roots, "source")  # the guest's own
    for bad in (f"{share}/c1/rootfs/esc", f"{share}/c1/rootfs/up/x",
                f"{share}/c1/rootfs/../../../etc", "/proc/../etc"):
        with pytest.raises(PathRefused):
            hostpaths.stays_within(bad, roots, "source")


def test_the_agent_answers_invalid_argument_in_one_line(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "c1").mkdir(parents=True)
    (share / "c1" / "rootfs").symlink_to("/")
    state = service.AgentState(Reaper(), 0)
    state.mounted.append(str(share))
    agent = service.AgentService(state)

    async def ask() -> list[str]:
        errors = []
        requests = [
            agent.CopyFile(agent_pb2.CopyFileRequest(path="/run/cocoon/../../etc/cocoon-x",
                                                     data=b"x"), None),  # type: ignore[arg-type]
            agent.CreateContainer(agent_pb2.CreateContainerRequest(
                container_id="c1", OCI=kata_oci_pb2.Spec(
                    Root=kata_oci_pb2.Root(Path=f"{share}/c1/rootfs"))),
                None),  # type: ignore[arg-type]
            agent.CreateContainer(agent_pb2.CreateContainerRequest(
                container_id="c2", storages=[agent_pb2.Storage(
                    driver="virtio-fs", source="cocoon", mount_point="/etc")]),
                None),  # type: ignore[arg-type]
        ]
        for request in requests:
            with pytest.raises(ContainerError) as err:
                await request
            errors.append(str(err.value))
        return errors

    errors = asyncio.run(ask())
    assert all("\n" not in e for e in errors)
    assert "leads out of" in errors[1] and "outside /run/cocoon" in errors[2]
    assert "clean path" in errors[0]
    assert not Path("/etc/cocoon-x").exists()
