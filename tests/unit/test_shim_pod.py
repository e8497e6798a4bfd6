"""What a pod's containers get: shared namespaces rewritten for the guest, the VM's size."""

from __future__ import annotations

from cocoon.oci.default import default_spec
from cocoon.oci.spec import Spec
from cocoon.runtime.sizing import default_memory_mib, vm_memory_mib
from cocoon.shim.address import PodRef
from cocoon.shim.pod import network_namespace, share_pod_namespaces


def _cri_app_spec(extra: dict[str, object] | None = None) -> Spec:
    data = default_spec()
    data["linux"]["namespaces"] = [
        {"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "uts", "path": "/proc/42/ns/uts"}, {"type": "mount"},
        {"type": "network", "path": "/var/run/netns/cni-1"}]
    data["linux"].update(extra or {})
    return Spec.from_dict(data)


def test_app_containers_join_the_sandbox_containers_namespaces() -> None:
    spec = share_pod_namespaces(_cri_app_spec(), PodRef("pod1", sandbox=False))
    assert spec.linux is not None
    paths = {ns.type: ns.path for ns in spec.linux.namespaces}
    assert paths == {"pid": "container:pod1", "ipc": "container:pod1", "uts": "container:pod1",
                     "mount": "", "network": "/var/run/netns/cni-1"}


def test_sandbox_and_unshared_namespaces_are_left_alone() -> None:
    spec = _cri_app_spec()
    assert share_pod_namespaces(spec, PodRef("pod1", sandbox=True)) is spec
    own_pid = Spec.from_dict({**spec.to_dict(), "linux": {"namespaces": [{"type": "pid"}]}})
    rewritten = share_pod_namespaces(own_pid, PodRef("pod1", sandbox=False))
    assert rewritten.linux is not None and rewritten.linux.namespaces[0].path == ""


def test_vm_memory_and_network_namespace() -> None:
    spec = _cri_app_spec()
    assert vm_memory_mib(spec) == default_memory_mib()
    big = _cri_app_spec({"resources": {"memory": {"limit": 1 << 30}}})
    assert vm_memory_mib(big) == 1024 + 128
    assert network_namespace(spec) == "/var/run/netns/cni-1"
    assert network_namespace(Spec.from_dict(default_spec())) is None
