"""Mount option parsing and `secure_join`: the pure parts of building a container's root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cocoon.agent import rootfs
from cocoon.agent import syscalls as sc


def test_flags_propagation_and_data_are_told_apart() -> None:
    opts = rootfs.parse_options(["nosuid", "noexec", "ro", "mode=755", "size=65536k",
                                 "rprivate", "tmpcopyup"])
    assert opts.flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_RDONLY
    assert opts.propagation == (sc.MS_PRIVATE | sc.MS_REC,)
    assert opts.data == "mode=755,size=65536k"  # tool-only options never reach the kernel


def test_later_options_win_and_rbind_is_recursive() -> None:
    opts = rootfs.parse_options(["ro", "rw", "rbind", "exec", "noexec", "defaults"])
    assert opts.flags == sc.MS_BIND | sc.MS_REC | sc.MS_NOEXEC
    assert opts.data == ""


def test_secure_join_plain_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    assert rootfs.secure_join(str(tmp_path), "/etc/passwd") == f"{tmp_path}/etc/passwd"
    assert rootfs.secure_join(str(tmp_path), "new/./dir/") == f"{tmp_path}/new/dir"


def test_secure_join_keeps_dotdot_inside(tmp_path: Path) -> None:
    assert rootfs.secure_join(str(tmp_path), "/../../../etc/shadow") == \
        f"{tmp_path}/etc/shadow"


def test_secure_join_resolves_symlinks_against_the_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "abs").symlink_to("/real")  # absolute: means <root>/real, not the host's
    (tmp_path / "escape").symlink_to("../../../../../tmp")
    (tmp_path / "real" / "up").symlink_to("../real")
    assert rootfs.secure_join(str(tmp_path), "/abs/x") == f"{tmp_path}/real/x"
    assert rootfs.secure_join(str(tmp_path), "/escape/y") == f"{tmp_path}/tmp/y"
    assert rootfs.secure_join(str(tmp_path), "/real/up/up/z") == f"{tmp_path}/real/z"


def test_secure_join_refuses_symlink_loops(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(OSError) as caught:
        rootfs.secure_join(str(tmp_path), "/a/file")
    assert caught.value.errno == errno.ELOOP


def test_default_devices_are_runcs() -> None:
    paths = {d.path: (d.type, d.major, d.minor) for d in rootfs.DEFAULT_DEVICES}
    assert paths == {"/dev/null": ("c", 1, 3), "/dev/zero": ("c", 1, 5),
                     "/dev/full": ("c", 1, 7), "/dev/random": ("c", 1, 8),
                     "/dev/urandom": ("c", 1, 9), "/dev/tty": ("c", 5, 0)}
