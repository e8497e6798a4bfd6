"""Initramfs compression: each format round-trips and gives the same bytes every time."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cocoon.errors import AssetError
from cocoon.guest.compress import COMPRESSIONS, DEFAULT_COMPRESSION, compress_file

LZ4_LEGACY_MAGIC = bytes.fromhex("02214c18")  # what the kernel's unlz4 expects


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    src = tmp_path / "in.cpio"
    src.write_bytes(os.urandom(100_000) + b"A" * 3_000_000)
    return src


def test_default_is_a_known_format() -> None:
    assert DEFAULT_COMPRESSION in COMPRESSIONS


def test_none_copies(payload: Path, tmp_path: Path) -> None:
    compress_file(payload, tmp_path / "out", "none")
    assert (tmp_path / "out").read_bytes() == payload.read_bytes()


def test_gzip_round_trips_without_a_timestamp(payload: Path, tmp_path: Path) -> None:
    compress_file(payload, tmp_path / "a.gz", "gzip")
    os.utime(payload, (1, 1))
    compress_file(payload, tmp_path / "b.gz", "gzip")
    a = (tmp_path / "a.gz").read_bytes()
    assert a == (tmp_path / "b.gz").read_bytes()
    assert a[4:8] == b"\0\0\0\0"  # MTIME field
    assert gzip.decompress(a) == payload.read_bytes()
    assert len(a) < payload.stat().st_size


@pytest.mark.skipif(shutil.which("lz4") is None, reason="lz4 not installed")
def test_lz4_is_legacy_format_and_round_trips(payload: Path, tmp_path: Path) -> None:
    compress_file(payload, tmp_path / "a.lz4", "lz4")
    compress_file(payload, tmp_path / "b.lz4", "lz4")
    a = (tmp_path / "a.lz4").read_bytes()
    assert a == (tmp_path / "b.lz4").read_bytes()
    assert a[:4] == LZ4_LEGACY_MAGIC
    back = subprocess.run(["lz4", "-d", "-c", str(tmp_path / "a.lz4")], capture_output=True,
                          check=True).stdout
    assert back == payload.read_bytes()


def test_unknown_method_is_refused(payload: Path, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="unknown initramfs compression"):
        compress_file(payload, tmp_path / "x", "zstd")  # type: ignore[arg-type]
