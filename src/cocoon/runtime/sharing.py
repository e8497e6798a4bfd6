"""Which containers run in a VM: the one it was started for, and those that joined it.

A container that joins another's namespaces runs in that container's VM (`runtime.joins`), so a
VM may hold several containers of one state root (a podman pod). Each has an entry in the VM
directory's `users/`; deleting a container stops the VM only when no other container that still
exists uses it, and otherwise removes just that container from the guest. The entries change
under an flock of the VM directory, so that two deletes cannot both leave the VM to the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from cocoon.errors import SandboxError
from cocoon.oci.state import StateStore
from cocoon.sandbox.layout import Layout

USERS = "users"
LOCK = "users.lock"


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """The VM's users lock (nothing to lock when its directory is gone)."""
    try:
        fd = os.open(layout.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add(layout: Layout, container_id: str) -> None:
    try:
        (layout.root / USERS).mkdir(exist_ok=True, mode=0o700)
        (layout.root / USERS / container_id).touch()
    except FileNotFoundError as err:
        # its monitor died and took the directory with it (QEMU killed as the VM was handed over)
        raise SandboxError(f"container {container_id}: its VM is gone ({layout.root} was "
                           "removed as it started)", vm_dir=str(layout.root)) from err


def remove(layout: Layout, container_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (layout.root / USERS / container_id).unlink()


def others(layout: Layout, container_id: str, store: StateStore) -> list[str]:
    """The other containers of `store` that still exist and use the VM."""
    try:
        names = os.listdir(layout.root / USERS)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name != container_id and store.exists(name))
