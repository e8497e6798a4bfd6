"""What a template is made of, and its name: the digest of every input that changes the guest.

Two sandboxes can share a template exactly when their guests would be identical after boot:
same kernel, guest image, memory size, vCPUs, machine, accelerator and CPU model, kernel
arguments and device set, and the same QEMU (whose device state format a template holds).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Bump when what a template holds changes in a way the inputs below would not show.
FORMAT = 1
# Empty PCIe root ports a template is saved with: a clone's shares and NICs are hot-plugged
# into them (one virtio-fs share, and NICs for the rest).
HOTPLUG_PORTS = 8
# virtio-serial ports for bulk stdout/stderr beside the agent's (cocoon.agent.stdioports); each
# stalled reader can hold up to 128 x 256 KiB of its container's output in the guest
STDIO_PORTS = 8


@dataclass(frozen=True)
class TemplateSpec:
    """The inputs of one template. `kernel` and `initrd` are paths; their identities are
    `kernel_id` (release and package version) and `image_digest`."""

    kernel: str
    kernel_id: str
    initrd: str
    image_digest: str
    memory_mib: int
    vcpus: int
    machine: str
    accel: str
    cpu_model: str
    kernel_args: tuple[str, ...]
    qemu_version: str
    tb_size_mib: int | None
    hotplug_ports: int = HOTPLUG_PORTS
    stdio_ports: int = STDIO_PORTS
    debug_port: bool = True  # the debug console's port (cocoon.debug)
    balloon: bool = True  # virtio-balloon with free page reporting
    format: int = FORMAT

    def inputs(self) -> dict[str, Any]:
        """Everything that names the template (the paths are not: the same image elsewhere is
        the same template)."""
        data = asdict(self)
        data.pop("kernel")
        data.pop("initrd")
        data["kernel_args"] = list(self.kernel_args)
        return data

    @property
    def digest(self) -> str:
        text = json.dumps(self.inputs(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def name(self) -> str:
        return self.digest[:16]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kernel_args"] = list(self.kernel_args)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TemplateSpec:
        fields = dict(data)
        fields["kernel_args"] = tuple(fields.get("kernel_args") or ())
        return cls(**fields)

    @property
    def kernel_path(self) -> Path:
        return Path(self.kernel)

    @property
    def initrd_path(self) -> Path:
        return Path(self.initrd)
