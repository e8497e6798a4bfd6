"""User namespaces through the runc-compatible CLI, against a real VM.

A container whose config maps container ids 0-65535 to host ids 100000-165535 must see itself as
root, read its mapping in /proc/self/uid_map, and see the rootfs (which reaches the guest through
virtio-fs with the host's owners) through the mapping: a file the host has owned by 100000 is
root's, one owned by host root belongs to nobody (the overflow id 65534); what it creates is
100000's on the host. An exec into the container is in the same namespace. A config the kernel
would refuse is refused before a VM starts, in one line naming the field.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.framework.cli import Cli
from tests.vm.container_kit import make_bundle

pytestmark = pytest.mark.integration

HOST_BASE = 100000
MAPPING = [{"containerID": 0, "hostID": HOST_BASE, "size": 65536}]
REPORT = "id -u; id -g; cat /proc/self/uid_map; stat -c %u /mapped /hostroot"


def with_userns(spec: dict[str, Any]) -> None:
    spec["root"]["readonly"] = False
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = MAPPING
    spec["linux"]["gidMappings"] = MAPPING


def chown_tree(root: Path, uid: int, gid: int) -> None:
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(directory, name), uid, gid)
    os.lchown(root, uid, gid)


def userns_bundle(path: Path, args: list[str]) -> Path:
    """A busybox bundle owned by host 100000 (root in the container), but for /hostroot."""
    bundle = make_bundle(path, args, with_userns)
    rootfs = bundle / "rootfs"
    (rootfs / "mapped").write_text("mapped\n")
    (rootfs / "hostroot").write_text("host root's\n")
    chown_tree(rootfs, HOST_BASE, HOST_BASE)
    os.chown(rootfs / "hostroot", 0, 0)
    return bundle


def expected_report() -> list[str]:
    return ["0", "0", "0 100000 65536", "0", "65534"]


def lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().splitlines()]


def test_a_container_in_a_user_namespace_and_an_exec_into_it(state_root: Path,
                                                             tmp_path: Path) -> None:
    cli = Cli(state_root)
    script = (f"{{ {REPORT}; }} > /report.tmp 2>&1; mv /report.tmp /report; "
              "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    bundle = userns_bundle(tmp_path / "b", ["sh", "-c", script])
    report = bundle / "rootfs" / "report"
    cid = "userns"
    cli.ok("run", "--detach", "--bundle", str(bundle), cid)
    try:
        deadline = time.monotonic() + 60
        while not report.exists():
            assert time.monotonic() < deadline, "the container wrote no report"
            time.sleep(0.2)
        assert lines(report.read_text()) == expected_report()
        # what the container's root made is the host's 100000
        assert report.stat().st_uid == HOST_BASE and report.stat().st_gid == HOST_BASE
        exec_report = cli("exec", cid, "sh", "-c", REPORT)
        assert exec_report.returncode == 0, exec_report.stderr
        assert lines(exec_report.stdout) == expected_report()
        unmapped = cli("exec", "--user", "70000", cid, "id")
        assert unmapped.returncode != 0
        assert "process.user.uid: 70000 is not mapped" in unmapped.stderr, unmapped.stderr
        assert len(unmapped.stderr.strip().splitlines()) == 1, unmapped.stderr
        cli.ok("kill", cid, "KILL")
    finally:
        cli("delete", "--force", cid)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda linux: linux["uidMappings"][0].update(size=0),
     "linux.uidMappings[0]: size is 0"),
    (lambda linux: linux["gidMappings"].append({"containerID": 100, "hostID": 1, "size": 5}),
     "linux.gidMappings[1]: its containerID range overlaps that of linux.gidMappings[0]"),
    (lambda linux: linux["uidMappings"][0].update(hostID=2**32 - 10),
     "linux.uidMappings[0]: hostID 4294967286 + size 65536 runs past the largest id"),
    (lambda linux: linux.update(gidMappings=[]),
     "linux.gidMappings: a new user namespace needs both uid and gid mappings"),
    (lambda linux: linux.update(namespaces=[n for n in linux["namespaces"]
                                            if n["type"] != "user"]),
     "linux.uidMappings: mappings need a user namespace"),
])
def test_a_bad_mapping_is_refused_in_one_line(state_root: Path, tmp_path: Path, edit: Any,
                                              needle: str) -> None:
    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "b", ["true"], with_userns)
    spec = json.loads((bundle / "config.json").read_text())
    edit(spec["linux"])
    (bundle / "config.json").write_text(json.dumps(spec))
    result = cli("run", "--bundle", str(bundle), "bad")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and needle in message, message
    assert cli("state", "bad").returncode != 0
