"""Pod grouping, socket paths and sandbox directories: the same facts give the same places."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cocoon.errors import ConfigError
from cocoon.shim import address as addr
from cocoon.shim.address import PodRef, pod_of


def test_a_container_without_cri_annotations_is_its_own_pod() -> None:
    assert pod_of("c1", {}) == PodRef("c1", sandbox=True)


def test_cri_sandbox_and_app_containers_share_the_pod_id() -> None:
    sandbox = {addr.CONTAINER_TYPE: "sandbox", addr.SANDBOX_ID: "pod1"}
    app = {addr.CONTAINER_TYPE: "container", addr.SANDBOX_ID: "pod1"}
    assert pod_of("pod1", sandbox) == PodRef("pod1", sandbox=True)
    assert pod_of("c2", app) == PodRef("pod1", sandbox=False)
    # an app container that names no sandbox cannot join one
    assert pod_of("c3", {addr.CONTAINER_TYPE: "container"}) == PodRef("c3", sandbox=True)


def test_socket_paths_are_short_stable_and_distinct() -> None:
    long_id = "f" * 64
    a = addr.socket_path("/run/containerd/containerd.sock", "k8s.io", long_id)
    assert a == addr.socket_path("/run/containerd/containerd.sock", "k8s.io", long_id)
    assert len(str(a)) < 108
    assert a != addr.socket_path("/run/containerd/containerd.sock", "default", long_id)
    assert a != addr.socket_path("/other/containerd.sock", "k8s.io", long_id)
    assert addr.socket_url(a) == f"unix://{a}"
    assert addr.strip_unix(addr.socket_url(a)) == str(a)


def test_vm_dir_depends_on_containerd_namespace_and_pod(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("COCOON_VM_DIR", str(tmp_path))
    one = addr.vm_dir("/c.sock", "ns", "pod")
    assert one.parent == tmp_path and len(one.name) == 16
    assert one != addr.vm_dir("/c.sock", "ns2", "pod")
    assert one != addr.vm_dir("/d.sock", "ns", "pod")


def test_bundle_annotations_and_address_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "annotations": {addr.SANDBOX_ID: "p", "n": 1}}))
    assert addr.bundle_annotations(tmp_path) == {addr.SANDBOX_ID: "p", "n": "1"}
    addr.write_address(tmp_path, "unix:///x")
    assert (tmp_path / "address").read_text() == "unix:///x"
    assert not (tmp_path / ".address").exists()


def test_unreadable_bundle_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json"):
        addr.bundle_annotations(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        addr.bundle_annotations(tmp_path)
