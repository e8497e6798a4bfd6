"""The guest's spec: what each volume asks of the share, and what the log says it cannot do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

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
