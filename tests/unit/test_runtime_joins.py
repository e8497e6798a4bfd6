"""Namespace paths: of the right type or refused; another container's joined in its VM; a host
process's refused by name."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConfigError
from cocoon.oci.default import default_spec
from cocoon.oci.spec import Spec, parse_spec
from cocoon.oci.state import ContainerState, StateStore, Status, process_start_time
from cocoon.runtime.joins import resolve


def spec_with(**paths: str) -> Spec:
    data: dict[str, Any] = default_spec()
    data["linux"]["namespaces"] = [
        {"type": kind, **({"path": paths[kind]} if kind in paths else {})}
        for kind in ("pid", "ipc", "uts", "mount", "network")]
    return parse_spec(data)


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A host process playing a container's shim (its namespaces are the host's)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_path_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"namespaces\[0\].path: /proc/self/ns/ipc is a ipc "
                                          r"namespace, not pid"):
        resolve(StateStore(Path("/nonexistent")), spec_with(pid="/proc/self/ns/ipc"))


def test_a_missing_path_or_a_plain_file_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(store, spec_with(ipc=str(tmp_path / "none")))
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match="is not a namespace"):
        resolve(store, spec_with(ipc=str(tmp_path / "plain")))


def test_a_host_process_namespace_is_refused_by_name(
        tmp_path: Path, stand_in: subprocess.Popen[bytes]) -> None:
    with pytest.raises(ConfigError, match=rf"namespace of host process {stand_in.pid} \(sleep\)"
                                          r": a container in a VM cannot join"):
        resolve(StateStore(tmp_path), spec_with(ipc=f"/proc/{stand_in.pid}/ns/ipc"))


def test_another_containers_namespaces_are_joined_in_its_vm(
        tmp_path: Path, stand_in: subprocess.Popen[bytes]) -> None:
    store = StateStore(tmp_path)
    owner = ContainerState(id="infra", bundle="/b", rootfs="/b/rootfs", vm_dir="/run/vm/x",
                           status=Status.RUNNING, pid=stand_in.pid,
                           pid_start=process_start_time(stand_in.pid) or 0)
    store.create(owner)
    joins = resolve(store, spec_with(ipc=f"/proc/{stand_in.pid}/ns/ipc",
                                     uts=f"/proc/{stand_in.pid}/ns/uts"))
    assert joins.sandbox is not None and joins.sandbox.id == "infra"
    assert joins.spec.linux is not None
    paths = {ns.type: ns.path for ns in joins.spec.linux.namespaces}
    assert paths == {"pid": "", "ipc": "container:infra", "uts": "container:infra",
                     "mount": "", "network": ""}


def test_a_network_namespace_path_is_carried_not_joined(tmp_path: Path) -> None:
    joins = resolve(StateStore(tmp_path), spec_with(network="/proc/self/ns/net"))
    assert joins.sandbox is None
    assert joins.spec.linux is not None
    assert [ns.path for ns in joins.spec.linux.namespaces if ns.type == "network"] == [
        "/proc/self/ns/net"]
