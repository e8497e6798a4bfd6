"""Just enough ELF to list a binary's DT_NEEDED libraries.

The guest image carries only some of the shared libraries Debian's Python can use. The builder
reads which libraries each binary and extension module needs so it can drop extension modules
whose libraries are left out, and refuse to build an image whose interpreter would not start,
without depending on binutils on the host.
"""

from __future__ import annotations

import struct
from pathlib import Path

from cocoon.errors import AssetError

MAGIC = b"\x7fELF"
_SHT_DYNAMIC = 6
_DT_NULL = 0
_DT_NEEDED = 1


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def needed(path: Path) -> list[str]:
    """The DT_NEEDED entries of a 64-bit little-endian ELF file, in file order."""
    data = path.read_bytes()
    if data[:4] != MAGIC or data[4] != 2 or data[5] != 1:
        raise AssetError(f"{path} is not a 64-bit little-endian ELF file", path=str(path))
    try:
        return _needed(data)
    except (struct.error, IndexError, ValueError) as err:
        raise AssetError(f"{path}: malformed ELF ({err})", path=str(path)) from err


def _needed(data: bytes) -> list[str]:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    result: list[str] = []
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, _ent in sections:
        if sh_type != _SHT_DYNAMIC:
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == _DT_NULL:
                break
            if tag == _DT_NEEDED:
                start = strtab_offset + value
                end = data.index(b"\0", start)
                result.append(data[start:end].decode())
    return result
