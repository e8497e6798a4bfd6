"""How big a container's VM is: guest memory is fixed when the VM boots.

A container with a memory limit gets that limit plus room for the guest kernel and the agent;
one without gets the default (`hypervisor.memory_mib`, 256 MiB).
"""

from __future__ import annotations

from cocoon.config import current as settings
from cocoon.errors import ConfigError
from cocoon.oci.spec import Spec

MEMINFO = "/proc/meminfo"

VM_OVERHEAD_MIB = 128  # guest kernel, agent and page cache beside the container's limit


def default_memory_mib() -> int:
    return settings().hypervisor.memory_mib


def vm_memory_mib(spec: Spec) -> int:
    limit = None
    if spec.linux and spec.linux.resources and spec.linux.resources.memory:
        limit = spec.linux.resources.memory.limit
    if limit and limit > 0:
        return max(default_memory_mib(), limit // (1 << 20) + VM_OVERHEAD_MIB)
    return default_memory_mib()


def host_memory_mib(meminfo: str = MEMINFO) -> int | None:
    """The host's MemTotal in MiB (None if it cannot be read)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(spec: Spec, meminfo: str = MEMINFO) -> None:
    """Refuse a VM bigger than the host's memory: its RAM is fixed at boot, and a guest of
    256 GiB costs gigabytes of host memory in page tables before it runs anything (a limit
    of 1 TiB does not even fit QEMU's 40 physical address bits)."""
    total = host_memory_mib(meminfo)
    needed = vm_memory_mib(spec)
    if total is None or needed <= total:
        return
    limit = needed - VM_OVERHEAD_MIB
    raise ConfigError(f"config.json: linux.resources.memory.limit: a limit of {limit} MiB "
                      f"needs a VM of {needed} MiB, more than this "
                      f"host's memory (MemTotal {total} MiB)",
                      field="linux.resources.memory.limit")
