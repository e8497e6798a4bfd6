"""Where a pod's shim listens and where its VM lives, derived from facts containerd gives again.

Nothing here is stored: `start` (to find a pod's running shim) and `delete` (to clean up after
a dead one) compute the same socket path and sandbox directory from containerd's address, the
namespace and the pod id (the CRI sandbox-id annotation of the bundle's config.json, or the
container's own id). The socket path follows containerd's own shims: a sha256 under
/run/containerd/s, short enough for a unix socket whatever the ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cocoon.config import current as settings
from cocoon.errors import ConfigError
from cocoon.sandbox.layout import vm_dir_for

CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ADDRESS_FILE = "address"


@dataclass(frozen=True)
class PodRef:
    """Which pod a container belongs to, and whether it is the pod's sandbox container."""

    pod_id: str
    sandbox: bool  # the pause/sandbox container, or a standalone container (its own pod)


def socket_dir() -> Path:
    """Where the shims listen (`runtime.shim_socket_dir`)."""
    return settings().runtime.shim_socket_dir


def pod_of(container_id: str, annotations: Mapping[str, str]) -> PodRef:
    """The pod of a container from its CRI annotations; without them it is its own pod."""
    kind = annotations.get(CONTAINER_TYPE, "")
    sandbox_id = annotations.get(SANDBOX_ID, "")
    if kind == "container" and sandbox_id:
        return PodRef(sandbox_id, sandbox=False)
    return PodRef(sandbox_id if kind == "sandbox" and sandbox_id else container_id, sandbox=True)


def bundle_annotations(bundle: Path) -> dict[str, str]:
    """The annotations of a bundle's config.json (read without the full validation)."""
    path = bundle / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}", path=str(path)) from err
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, dict):
        return {}
    return {str(k): str(v) for k, v in annotations.items()}


def socket_path(containerd_address: str, namespace: str, pod_id: str) -> Path:
    digest = hashlib.sha256(f"{containerd_address}/{namespace}/{pod_id}".encode()).hexdigest()
    return socket_dir() / digest


def socket_url(path: Path) -> str:
    return f"unix://{path}"


def strip_unix(address: str) -> str:
    return address.removeprefix("unix://")


def vm_dir(containerd_address: str, namespace: str, pod_id: str) -> Path:
    """The pod's sandbox directory (short: /run/cocoon-vm/<16 hex>)."""
    return vm_dir_for(f"containerd-shim:{containerd_address}", f"{namespace}/{pod_id}")


def write_address(bundle: Path, address: str) -> None:
    """The `address` file containerd reads to reconnect to the shim after it restarts."""
    tmp = bundle / f".{ADDRESS_FILE}"
    tmp.write_text(address)
    os.replace(tmp, bundle / ADDRESS_FILE)
