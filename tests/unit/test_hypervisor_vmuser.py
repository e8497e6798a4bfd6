"""QEMU's own user: ids from its pid in a range of their own, the id maps that make the range
usable, the accounts that would share it, and the hand-over of its files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cocoon.hypervisor import vmuser


def test_ids_are_the_pid_above_a_base_and_stay_in_their_range() -> None:
    assert vmuser.qemu_ids(1) == 0x7C000001
    assert vmuser.qemu_ids(vmuser.PID_MAX_LIMIT - 1) == vmuser.QEMU_ID_LAST == 0x7C3FFFFF
    assert vmuser.QEMU_ID_LAST < 0x80000000  # clear of ids that break signed arithmetic
    for pid in (0, -1, vmuser.PID_MAX_LIMIT):
        with pytest.raises(ValueError):
            vmuser.qemu_ids(pid)


@pytest.mark.parametrize(("id_map", "unmapped"), [
    ("         0          0 4294967295\n", False),  # the initial namespace
    ("0 100000 65536\n", True),  # a rootless container's
    ("0 0 65536\n2080374784 2080374784 4194304\n", False),  # the range mapped alone
    ("0 0 65536\n2080374784 2080374784 4194303\n", True),  # one id short
    ("", True),
])
def test_the_whole_range_must_be_mapped(id_map: str, unmapped: bool) -> None:
    assert vmuser.unmapped(id_map) is unmapped


def test_accounts_inside_the_range_are_named() -> None:
    found = vmuser.accounts_in_range([("root", 0), ("odd", 0x7C000010)],
                                     [("kvm", 104), ("big", 0x7C3FFFFF), ("above", 0x7C400000)])
    assert found == [f"user odd ({0x7C000010})", f"group big ({0x7C3FFFFF})"]


def test_this_host_maps_the_range() -> None:
    assert vmuser.mapping_problem() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_hand_over_never_follows_a_link(tmp_path: Path) -> None:
    """A directory and a socket path are changed themselves, never what a link names (a
    previous QEMU of the sandbox may have left one); files go by descriptor."""
    directory = tmp_path / "vm"
    directory.mkdir()
    target = tmp_path / "host-file"
    target.write_text("root's")
    link = directory / "vfs.sock"
    link.symlink_to(target)
    log = directory / "console.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        vmuser.hand_over([directory], [link, directory / "missing.sock"], [fd])(
            vmuser.qemu_ids(4242))
    finally:
        os.close(fd)
    ids = vmuser.qemu_ids(4242)
    assert (directory.stat().st_uid, directory.stat().st_gid) == (ids, ids)
    assert link.lstat().st_uid == ids and target.stat().st_uid == 0
    assert log.stat().st_uid == ids
