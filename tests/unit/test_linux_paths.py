"""`secure_join`: a path resolved inside a root, whatever its symlinks say."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cocoon.linux.paths import secure_join


def test_secure_join_plain_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    assert secure_join(str(tmp_path), "/etc/passwd") == f"{tmp_path}/etc/passwd"
    assert secure_join(str(tmp_path), "new/./dir/") == f"{tmp_path}/new/dir"


def test_secure_join_keeps_dotdot_inside(tmp_path: Path) -> None:
    assert secure_join(str(tmp_path), "/../../../etc/shadow") == \
        f"{tmp_path}/etc/shadow"


def test_secure_join_resolves_symlinks_against_the_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "abs").symlink_to("/real")  # absolute: means <root>/real, not the host's
    (tmp_path / "escape").symlink_to("../../../../../tmp")
    (tmp_path / "real" / "up").symlink_to("../real")
    assert secure_join(str(tmp_path), "/abs/x") == f"{tmp_path}/real/x"
    assert secure_join(str(tmp_path), "/escape/y") == f"{tmp_path}/tmp/y"
    assert secure_join(str(tmp_path), "/real/up/up/z") == f"{tmp_path}/real/z"


def test_secure_join_refuses_symlink_loops(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(OSError) as caught:
        secure_join(str(tmp_path), "/a/file")
    assert caught.value.errno == errno.ELOOP


def test_open_in_root_resolves_inside_and_beneath_refuses(tmp_path: Path) -> None:
    from cocoon.linux.paths import open_in_root
    (tmp_path / "root" / "in").mkdir(parents=True)
    (tmp_path / "secret").write_text("host")
    (tmp_path / "root" / "up").symlink_to("../secret")
    (tmp_path / "root" / "abs").symlink_to(str(tmp_path / "secret"))
    root = os.open(tmp_path / "root", os.O_PATH | os.O_DIRECTORY)
    try:
        for path in ("up", "abs", "../secret", "in/../../secret"):
            with pytest.raises(OSError) as beneath:
                open_in_root(root, path, os.O_RDONLY, in_root=False)
            assert beneath.value.errno in (errno.EXDEV, errno.ENOENT, errno.ELOOP), path
            # in_root: the same names mean the root's own (here: absent) files
            with pytest.raises(FileNotFoundError):
                open_in_root(root, path, os.O_RDONLY)
        (tmp_path / "root" / "secret").write_text("root's own")
        fd = open_in_root(root, "../secret", os.O_RDONLY)
        assert os.read(fd, 100) == b"root's own"
        os.close(fd)
        with pytest.raises(OSError):  # magic links (/proc/self/fd/N) are never followed
            open_in_root(root, f"/proc/self/fd/{root}", os.O_RDONLY, in_root=False)
    finally:
        os.close(root)
