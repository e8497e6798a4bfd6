"""How big a container's VM is: guest memory is fixed when the VM boots.

A container with a memory limit gets that limit plus room for the guest kernel and the agent;
one without gets the default (`COCOON_VM_MEMORY_MIB`, 256 MiB).
"""

from __future__ import annotations

import os

from cocoon.oci.spec import Spec

VM_MEMORY_MIB = int(os.environ.get("COCOON_VM_MEMORY_MIB", "256"))
VM_OVERHEAD_MIB = 128  # guest kernel, agent and page cache beside the container's limit


def vm_memory_mib(spec: Spec) -> int:
    limit = None
    if spec.linux and spec.linux.resources and spec.linux.resources.memory:
        limit = spec.linux.resources.memory.limit
    if limit and limit > 0:
        return max(VM_MEMORY_MIB, limit // (1 << 20) + VM_OVERHEAD_MIB)
    return VM_MEMORY_MIB
