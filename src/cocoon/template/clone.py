"""A clone's guest RAM: a private copy of the template's.

vhost-user devices (virtio-fs) need RAM that virtiofsd can map too, which a private mapping of
the template's RAM file is not; and QEMU, running as a user of its own, may not open that file
read-write, as QEMU 7.2 does even for a private mapping. So every clone gets a memfd holding a
copy of the template's RAM. Only the data is copied: the template's holes
(the zero pages, and the free memory the guest zeroed before the save) stay holes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cocoon.errors import TemplateError


def copy_into_memfd(ram: Path, name: str = "cocoon-guest-ram") -> tuple[int, int]:
    """A new memfd with `ram`'s content (holes kept); returns the fd and the bytes copied.

    The fd is not inheritable; hand it to QEMU through `pass_fds` and close it afterwards.
    """
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        src = os.open(ram, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(src).st_size
            os.ftruncate(fd, size)
            copied = _copy_data(src, fd, size)
        finally:
            os.close(src)
    except OSError as err:
        os.close(fd)
        raise TemplateError(f"cannot copy the template RAM {ram}: {err.strerror}",
                            path=str(ram)) from err
    except BaseException:
        os.close(fd)
        raise
    return fd, copied


def _copy_data(src: int, dst: int, size: int) -> int:
    copied = 0
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError:
            break  # ENXIO: nothing but a hole from here to the end
        end = os.lseek(src, start, os.SEEK_HOLE)
        os.lseek(dst, start, os.SEEK_SET)
        position = start
        while position < end:
            sent = os.sendfile(dst, src, position, end - position)
            if sent == 0:
                raise OSError(5, f"short read at {position}")
            position += sent
        copied += end - start
        offset = end
    return copied


def close_quietly(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
