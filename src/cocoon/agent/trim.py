"""Making a guest small before it is saved as a template (`cocoon.GuestAgent/TrimMemory`).

A template's RAM file is mapped by every clone, and a clone whose RAM must be shared with
virtiofsd gets a copy of every page of it that is not a hole. Pages the guest once used and
freed still hold their old bytes, so they would be copied too. The trim drops the guest's caches,
hands the agent's free heap back, compacts, and then zeroes what is free by faulting in (and
releasing) anonymous memory, which the kernel zero-fills: the host turns zero pages into holes.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import mmap
import os
import time

from cocoon.protocols.gen import guest_pb2

logger = logging.getLogger("cocoon.agent.trim")

DEFAULT_KEEP_FREE = 16 << 20
_CHUNK = 16 << 20


def mem_free(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as f:
        for line in f:
            if line.startswith("MemFree:"):
                return int(line.split()[1]) * 1024
    return 0


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as err:
        logger.warning("trim: %s: %s", path, err.strerror)


def zero_free_memory(amount: int) -> int:
    """Fault in `amount` bytes of anonymous memory in chunks and release it; return how much
    was zeroed (less when the kernel ran short first)."""
    zeroed = 0
    held: list[mmap.mmap] = []
    try:
        while zeroed < amount:
            size = min(_CHUNK, amount - zeroed)
            try:
                held.append(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                      | mmap.MAP_POPULATE))
            except OSError:
                break
            zeroed += size
    finally:
        for area in held:
            area.close()
    return zeroed


def trim(keep_free: int = DEFAULT_KEEP_FREE) -> guest_pb2.TrimMemoryResponse:
    started = time.monotonic()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError) as err:
        logger.warning("trim: malloc_trim: %s", err)
    os.sync()
    _write("/proc/sys/vm/drop_caches", "3")
    _write("/proc/sys/vm/compact_memory", "1")
    zeroed = zero_free_memory(max(mem_free() - keep_free, 0))
    response = guest_pb2.TrimMemoryResponse(mem_free_bytes=mem_free(), zeroed_bytes=zeroed,
                                            seconds=time.monotonic() - started)
    logger.info("trimmed: %d MiB free, %d MiB zeroed in %.3f s", response.mem_free_bytes >> 20,
                zeroed >> 20, response.seconds)
    return response


