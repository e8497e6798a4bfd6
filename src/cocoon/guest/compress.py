"""Initramfs compression, chosen by measurement (docs/guest-image.md).

The kernel unpacks the initramfs before anything else runs, so decompression speed sits on the
start path of every VM while the saving in bytes read is small (the file is in the host page
cache). Only formats the cloud kernel can unpack are offered, and each must be deterministic:
gzip without a timestamp, lz4 in the legacy frame format the kernel requires.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path
from typing import Literal, get_args

from cocoon.errors import AssetError

Compression = Literal["none", "gzip", "lz4"]
COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)

# Measured (docs/guest-image.md): boots as fast as an uncompressed image, gzip is 0.35 s slower,
# and QEMU holds about 40 MB less per VM than with the uncompressed image.
DEFAULT_COMPRESSION: Compression = "lz4"

_CHUNK = 1 << 20


def compress_file(src: Path, dest: Path, method: Compression) -> None:
    """Write `src` compressed with `method` to `dest` (same bytes for the same input)."""
    if method == "none":
        shutil.copyfile(src, dest)
    elif method == "gzip":
        with src.open("rb") as fin, dest.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                              compresslevel=6) as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
    elif method == "lz4":
        _lz4_legacy(src, dest)
    else:
        raise AssetError(f"unknown initramfs compression {method!r}", method=method,
                         known=list(COMPRESSIONS))


def _lz4_legacy(src: Path, dest: Path) -> None:
    tool = shutil.which("lz4")
    if tool is None:
        raise AssetError("lz4 compression needs the lz4 tool (Debian package lz4)")
    cmd = [tool, "-l", "-9", "-q", "-f", str(src), str(dest)]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except subprocess.CalledProcessError as err:
        raise AssetError(f"lz4 failed: {err.stderr.decode(errors='replace').strip()}",
                         command=cmd, returncode=err.returncode) from err
