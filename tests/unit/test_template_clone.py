"""A clone's shared RAM: a memfd with the template's bytes, its holes kept as holes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cocoon.errors import TemplateError
from cocoon.template.clone import close_quietly, copy_into_memfd

MIB = 1 << 20


def test_the_copy_has_the_data_and_only_the_data(tmp_path: Path) -> None:
    ram = tmp_path / "ram"
    with ram.open("wb") as f:
        f.truncate(16 * MIB)
        for offset, fill in ((0, b"a"), (5 * MIB, b"b"), (16 * MIB - 4096, b"c")):
            f.seek(offset)
            f.write(fill * 4096)
    fd, copied = copy_into_memfd(ram)
    try:
        assert copied <= 3 * MIB  # the data extents (filesystems round them), not 16 MiB
        assert os.fstat(fd).st_size == 16 * MIB
        assert os.fstat(fd).st_blocks * 512 <= 3 * MIB
        assert os.pread(fd, 4096, 0) == b"a" * 4096
        assert os.pread(fd, 4096, 5 * MIB) == b"b" * 4096
        assert os.pread(fd, 4096, 16 * MIB - 4096) == b"c" * 4096
        assert os.pread(fd, 4096, 8 * MIB) == bytes(4096)
    finally:
        close_quietly(fd)


def test_an_all_hole_file_copies_nothing(tmp_path: Path) -> None:
    ram = tmp_path / "ram"
    with ram.open("wb") as f:
        f.truncate(4 * MIB)
    fd, copied = copy_into_memfd(ram)
    close_quietly(fd)
    assert copied == 0


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="ram"):
        copy_into_memfd(tmp_path / "ram")
