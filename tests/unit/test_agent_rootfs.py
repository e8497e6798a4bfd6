"""Mount option parsing and the default devices: the pure parts of building a container's root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cocoon.agent import rootfs
from cocoon.linux import syscalls as sc


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


def test_default_devices_are_runcs() -> None:
    paths = {d.path: (d.type, d.major, d.minor) for d in rootfs.DEFAULT_DEVICES}
    assert paths == {"/dev/null": ("c", 1, 3), "/dev/zero": ("c", 1, 5),
                     "/dev/full": ("c", 1, 7), "/dev/random": ("c", 1, 8),
                     "/dev/urandom": ("c", 1, 9), "/dev/tty": ("c", 5, 0)}


def test_only_the_rootfs_and_directory_bind_sources_are_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "volume").mkdir()
    (tmp_path / "file").write_text("")
    opened: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)  # raises as the real one does
        opened.append(path)
        return fd

    monkeypatch.setattr(os, "open", spy)
    rootfs.reach_sources(str(tmp_path / "root"), [
        rootfs.Mount("/v", "bind", str(tmp_path / "volume"), ("rbind",)),
        rootfs.Mount("/f", "none", str(tmp_path / "file"), ("bind",)),  # not a directory
        rootfs.Mount("/m", "bind", str(tmp_path / "missing")),  # left to the setup to report
        rootfs.Mount("/proc", "proc", "proc"),  # not a bind
    ])
    assert opened == [str(tmp_path / "root"), str(tmp_path / "volume")]


class _Statvfs:
    def __init__(self, flag: int) -> None:
        self.f_flag = flag


def test_a_remount_refused_in_a_user_namespace_keeps_the_locked_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def mount(source: object, target: str, fstype: object, flags: int,
              data: object = None) -> None:
        calls.append(flags)
        if len(calls) == 1:
            raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(sc, "mount", mount)
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(os.ST_NOSUID | os.ST_NODEV))
    rootfs.remount("/", sc.MS_RDONLY)
    base = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    assert calls == [base, base | sc.MS_NOSUID | sc.MS_NODEV]


def test_a_remount_refused_for_another_reason_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def mount(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(sc, "mount", mount)
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(os.ST_RDONLY))
    with pytest.raises(OSError):
        rootfs.remount("/", sc.MS_RDONLY)  # nothing locked that was not asked for
