"""The DT_NEEDED reader agrees with readelf on real binaries."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cocoon.errors import AssetError
from cocoon.guest import elf
from cocoon.guest.inputs import Sources


def _samples() -> list[Path]:
    upb = Sources.installed().google_dir / "_upb"
    return [*sorted(upb.glob("*.so")), Path("/bin/ls"), Path("/usr/bin/env")]


def _readelf_needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils not installed")
@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.name)
def test_matches_readelf(path: Path) -> None:
    assert elf.needed(path) == _readelf_needed(path)


def test_protobuf_extension_needs_the_cxx_runtime() -> None:
    upb = next((Sources.installed().google_dir / "_upb").glob("*.so"))
    assert elf.is_elf(upb)
    assert "libstdc++.so.6" in elf.needed(upb)


def test_non_elf_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not elf.is_elf(script)
    with pytest.raises(AssetError, match="not a 64-bit little-endian ELF"):
        elf.needed(script)


def test_truncated_elf_is_an_asset_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.so"
    broken.write_bytes(Path("/bin/ls").read_bytes()[:200])
    with pytest.raises(AssetError, match="malformed ELF"):
        elf.needed(broken)
