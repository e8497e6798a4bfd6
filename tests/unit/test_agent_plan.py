"""From the spec the agent receives to the plans it executes, including pod namespace joins."""

from __future__ import annotations

from typing import Any

import pytest

from cocoon.agent import launch, plan
from cocoon.agent.container import Container, ContainerConfig, ContainerError
from cocoon.agent.process import Process, Reaper
from cocoon.linux import syscalls as sc
from cocoon.oci.default import default_spec
from cocoon.oci.spec import LinuxIDMapping, parse_spec
from cocoon.ttrpc.status import StatusCode


def _spec(**changes: Any) -> Any:
    data = default_spec()
    data["root"]["path"] = "/run/cocoon/shared/c1/rootfs"
    for key, value in changes.items():
        data[key] = value
    return parse_spec(data)


def test_default_spec_makes_runcs_namespaces_but_not_the_network() -> None:
    config = plan.container_config("c1", _spec())
    init = config.init
    assert init.namespaces == (sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC
                               | sc.CLONE_NEWUTS | sc.CLONE_NEWCGROUP)
    assert init.join_namespaces == []
    assert init.hostname == "cocoon"
    assert init.rootfs.readonly is True
    assert "/proc/kcore" in init.rootfs.masked_paths
    assert init.process.no_new_privileges is True
    assert init.process.rlimits == [("RLIMIT_NOFILE", 1024, 1024)]


def test_a_mount_namespace_is_made_even_when_the_spec_forgets_it() -> None:
    data = default_spec()
    data["linux"]["namespaces"] = [{"type": "pid"}]
    config = plan.container_config("c1", parse_spec(data))
    assert config.init.namespaces == sc.CLONE_NEWNS | sc.CLONE_NEWPID


def test_the_engines_dev_shm_bind_becomes_a_guest_tmpfs() -> None:
    data = default_spec()
    data["mounts"] = [m for m in data["mounts"] if m["destination"] != "/dev/shm"]
    data["mounts"].append({"destination": "/dev/shm", "type": "bind",
                           "source": "/var/lib/containers/shm", "options": ["rbind", "ro"]})
    mounts = plan.container_config("c1", parse_spec(data)).init.rootfs.mounts
    shm = [m for m in mounts if m.destination == "/dev/shm"]
    assert shm and shm[0].type == "tmpfs" and "ro" in shm[0].options


def test_process_user_terminal_and_resources_are_carried() -> None:
    data = default_spec()
    data["process"]["user"] = {"uid": 5, "gid": 6, "additionalGids": [7], "umask": 0o22}
    data["process"]["consoleSize"] = {"height": 30, "width": 90}
    data["linux"]["resources"] = {"pids": {"limit": 9}}
    data["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
    del data["process"]["capabilities"]
    config = plan.container_config("c1", parse_spec(data))
    process = config.init.process
    assert (process.uid, process.gid, process.additional_gids, process.umask) == (5, 6, [7], 18)
    assert process.capabilities is None  # absent: kept as they are, as under runc
    assert process.seccomp == {"defaultAction": "SCMP_ACT_ALLOW"}
    assert config.console_size == (30, 90)
    assert config.resources == {"pids": {"limit": 9}}


def _pause(pid: int = 4321, exited: bool = False) -> Container:
    config = plan.container_config("pause", _spec())
    container = Container("pause", config, None, Reaper())
    init = Process("pause", "", terminal=False, stdin=None, stdout=None, stderr=None)
    init.pid = pid
    if exited:
        init.set_exited(0)
    container.init = init
    return container


def _joining(*kinds: str, other: str = "pause") -> Any:
    data = default_spec()
    data["linux"]["namespaces"] = [
        {"type": n["type"], "path": f"container:{other}"} if n["type"] in kinds else n
        for n in data["linux"]["namespaces"]]
    return parse_spec(data)


def test_container_paths_join_the_other_containers_namespaces() -> None:
    config: ContainerConfig = plan.container_config(
        "app", _joining("ipc", "uts", "pid"), {"pause": _pause()})
    assert config.init.join_namespaces == [
        (sc.CLONE_NEWPID, "/proc/4321/ns/pid"), (sc.CLONE_NEWIPC, "/proc/4321/ns/ipc"),
        (sc.CLONE_NEWUTS, "/proc/4321/ns/uts")]
    assert config.init.namespaces == sc.CLONE_NEWNS | sc.CLONE_NEWCGROUP


def test_an_unknown_container_is_not_found() -> None:
    with pytest.raises(ContainerError) as caught:
        plan.container_config("app", _joining("ipc", other="ghost"), {"pause": _pause()})
    assert caught.value.code == StatusCode.NOT_FOUND
    assert "linux.namespaces[2]" in caught.value.status_message
    assert "ghost" in caught.value.status_message


def test_a_mount_namespace_is_never_shared() -> None:
    with pytest.raises(ValueError, match="mount namespace cannot be shared"):
        plan.container_config("app", _joining("mount"), {"pause": _pause()})


def test_an_exited_container_has_no_namespaces_to_join() -> None:
    with pytest.raises(ContainerError) as caught:
        plan.container_config("app", _joining("ipc"), {"pause": _pause(exited=True)})
    assert caught.value.code == StatusCode.FAILED_PRECONDITION


_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _with_userns(data: dict[str, Any], path: str = "", mapped: bool = True) -> Any:
    data["linux"]["namespaces"].append({"type": "user", "path": path} if path
                                       else {"type": "user"})
    if mapped:
        data["linux"]["uidMappings"] = _MAP
        data["linux"]["gidMappings"] = _MAP
    return parse_spec(data)


def test_a_user_namespace_is_made_with_the_specs_mappings() -> None:
    config = plan.container_config("c1", _with_userns(default_spec()))
    init = config.init
    assert init.namespaces & sc.CLONE_NEWUSER
    expected = (LinuxIDMapping(container_id=0, host_id=100000, size=65536),)
    assert init.uid_mappings == expected and init.gid_mappings == expected
    assert init.in_userns


def test_a_joined_user_namespace_takes_the_other_containers_mappings() -> None:
    owner = plan.container_config("pause", _with_userns(default_spec()))
    pause = _pause()
    pause.config = owner
    config = plan.container_config(
        "app", _with_userns(default_spec(), "container:pause", mapped=False), {"pause": pause})
    assert (sc.CLONE_NEWUSER, "/proc/4321/ns/user") in config.init.join_namespaces
    assert not config.init.namespaces & sc.CLONE_NEWUSER
    assert config.init.uid_mappings == owner.init.uid_mappings
    data = default_spec()
    data["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 10}]
    data["linux"]["gidMappings"] = _MAP
    with pytest.raises(ValueError, match="differ from those of the user namespace"):
        plan.container_config("app", _with_userns(data, "container:pause", mapped=False),
                              {"pause": pause})


def test_an_exec_must_run_as_a_mapped_user() -> None:
    init = plan.container_config("c1", _with_userns(default_spec())).init
    plan.check_mapped(launch.ProcessPlan(["id"], uid=65535, gid=0), init)
    with pytest.raises(ValueError, match=r"process\.user\.uid: 65536 is not mapped"):
        plan.check_mapped(launch.ProcessPlan(["id"], uid=65536), init)
    with pytest.raises(ValueError, match="gid 70000 is not mapped"):
        plan.check_mapped(launch.ProcessPlan(["id"], additional_gids=[70000]), init)
    unmapped = plan.container_config("c2", _spec()).init
    plan.check_mapped(launch.ProcessPlan(["id"], uid=70000), unmapped)
