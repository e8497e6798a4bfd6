"""The default config.json: what `runc spec` writes, and valid for our own parser."""

from __future__ import annotations

from cocoon.oci.default import DEFAULT_CAPABILITIES, OCI_VERSION, default_spec
from cocoon.oci.spec import parse_spec


def test_default_is_valid_and_matches_runc_spec() -> None:
    spec = parse_spec(default_spec())
    assert spec.oci_version == OCI_VERSION
    process = spec.process
    assert process is not None
    assert process.terminal and process.no_new_privileges
    assert process.args == ("sh",) and process.cwd == "/"
    assert (process.user.uid, process.user.gid) == (0, 0)
    caps = process.capabilities
    assert caps is not None
    assert caps.bounding == caps.effective == caps.permitted == DEFAULT_CAPABILITIES
    assert caps.ambient == () and caps.inheritable == ()
    assert [(r.type, r.soft, r.hard) for r in process.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert spec.root.path == "rootfs" and spec.root.readonly
    assert [m.destination for m in spec.mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    linux = spec.linux
    assert linux is not None
    assert [ns.type for ns in linux.namespaces] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert "/proc/kcore" in linux.masked_paths and "/proc/sys" in linux.readonly_paths
    assert linux.resources is not None
    assert linux.resources.devices[0].allow is False
    assert linux.resources.devices[0].access == "rwm"


def test_each_call_returns_a_fresh_dict() -> None:
    first = default_spec()
    first["process"]["args"].append("-x")
    first["mounts"].clear()
    assert default_spec()["process"]["args"] == ["sh"]
    assert len(default_spec()["mounts"]) == 7
