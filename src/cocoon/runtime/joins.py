"""Namespace paths in a config: checked, and another Cocoon container's joined in its VM.

An engine that makes containers share namespaces writes paths: `/proc/<pid>/ns/<type>` of the
container they join (podman for its pods' infra container and for `--ipc/--pid/--uts
container:NAME`), or a bind-mounted namespace file (`/run/netns/...` for networks). In a VM
runtime a path means one of three things:

- a network namespace: the VM carries it (its veths become the VM's NICs; `cocoon.network`);
- a namespace of another container of this state root, named through its host pid (the pid its
  state records: its shim): the new container runs in that container's VM and joins the guest
  namespace (`container:<id>`, which the agent resolves), so a podman pod is one VM;
- any other host process's namespace: nothing a VM can join; refused, naming it.

Every path must exist and be a namespace of the type its entry states (as runc checks).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
from dataclasses import dataclass

from cocoon.errors import ConfigError
from cocoon.linux import syscalls as sc
from cocoon.oci.spec import LinuxNamespace, Spec
from cocoon.oci.state import ContainerState, StateStore, process_start_time
from cocoon.runtime.guestspec import CONTAINER_NS_PREFIX

NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type
_PROC_NS = re.compile(r"^/proc/(\d+)/ns/[a-z_]+$")
# carried into the VM rather than joined inside it
CARRIED = ("network",)


@dataclass(frozen=True)
class Joins:
    spec: Spec                        # the config with the joined paths as container:<id>
    sandbox: ContainerState | None    # the container whose VM this one runs in, if any


def namespace_type(path: str) -> int:
    """The CLONE_NEW* type of the namespace file at `path`; ConfigError if it is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from err
    try:
        return int(fcntl.ioctl(fd, NS_GET_NSTYPE))
    except OSError:
        raise ConfigError(f"{path} is not a namespace") from None
    finally:
        os.close(fd)


def _type_name(flag: int) -> str:
    return next((name for name, value in sc.NAMESPACE_FLAGS.items() if value == flag),
                hex(flag))


def _owner(store: StateStore, path: str) -> ContainerState | None:
    """The container of this state root whose host pid the `/proc/<pid>/ns/...` path names."""
    match = _PROC_NS.match(os.path.normpath(path))
    if match is None:
        return None
    pid = int(match.group(1))
    for state in store.load_all():
        if state.pid == pid and state.pid_start and \
                process_start_time(pid) == state.pid_start:
            return state
    return None


def _host_process(path: str) -> str:
    match = _PROC_NS.match(os.path.normpath(path))
    if match is None:
        return "a host namespace"
    pid = match.group(1)
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = "?"
    return f"the namespace of host process {pid} ({comm})"


def resolve(store: StateStore, spec: Spec) -> Joins:
    """Check every namespace path; rewrite those of another container (see the module)."""
    if spec.linux is None:
        return Joins(spec, None)
    joined: dict[str, ContainerState] = {}
    namespaces: list[LinuxNamespace] = []
    for index, namespace in enumerate(spec.linux.namespaces):
        where = f"config.json: linux.namespaces[{index}].path"
        path = namespace.path
        if not path or path.startswith(CONTAINER_NS_PREFIX):
            namespaces.append(namespace)
            continue
        try:
            actual = namespace_type(path)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}", field=f"linux.namespaces[{index}]") from None
        wanted = sc.NAMESPACE_FLAGS[namespace.type]
        if actual != wanted:
            raise ConfigError(f"{where}: {path} is a {_type_name(actual)} namespace, not "
                              f"{namespace.type}", field=f"linux.namespaces[{index}]")
        if namespace.type in CARRIED:
            namespaces.append(namespace)
            continue
        owner = _owner(store, path)
        if owner is None:
            raise ConfigError(f"{where}: {path} is {_host_process(path)}: a container in a VM "
                              "cannot join a host namespace", field=f"linux.namespaces[{index}]")
        joined[owner.id] = owner
        namespaces.append(LinuxNamespace(type=namespace.type,
                                         path=f"{CONTAINER_NS_PREFIX}{owner.id}"))
    if len(joined) > 1:
        raise ConfigError(f"config.json: linux.namespaces: joins the namespaces of "
                          f"{', '.join(sorted(joined))}, which run in different VMs",
                          field="linux.namespaces")
    rewritten = dataclasses.replace(spec, linux=dataclasses.replace(
        spec.linux, namespaces=tuple(namespaces)))
    return Joins(rewritten, next(iter(joined.values()), None))
