"""config.json parsing: real-world configs round-trip, and every kind of error names its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon.errors import ConfigError
from cocoon.oci.default import default_spec
from cocoon.oci.spec import LinuxSyscall, Spec, load_spec, parse_spec

_CID = "5f0c2b6e8d1a"
_USERDATA = f"/var/lib/containers/storage/overlay-containers/{_CID}/userdata"
_RUNDATA = f"/run/containers/storage/overlay-containers/{_CID}/userdata"
_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
         "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
         "CAP_SYS_CHROOT"]

# What podman 4 writes for `podman run -v /srv/data:/data:ro --tmpfs /scratch --ulimit ...`,
# shaped after a config.json podman 4.3 wrote on this machine (seccomp profile trimmed).
PODMAN_CONFIG: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "user": {"uid": 0, "gid": 0, "umask": 18, "additionalGids": [0, 1, 2, 3, 4, 6, 10]},
        "args": ["/bin/sh", "-c", "echo hello; exit 7"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm", "container=podman", f"HOSTNAME={_CID}", "HOME=/root"],
        "cwd": "/",
        "capabilities": {"bounding": _CAPS, "effective": _CAPS, "permitted": _CAPS},
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576},
            {"type": "RLIMIT_NPROC", "hard": 32768, "soft": 32768},
            {"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0},
        ],
        "oomScoreAdj": 0,
    },
    "root": {"path": f"/var/lib/containers/storage/overlay/{_CID}/merged"},
    "hostname": _CID,
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]},
        {"destination": "/data", "type": "bind", "source": "/srv/data",
         "options": ["ro", "rbind", "rprivate"]},
        {"destination": "/etc/hosts", "type": "bind", "source": f"{_RUNDATA}/hosts",
         "options": ["bind", "rprivate"]},
        {"destination": "/etc/resolv.conf", "type": "bind",
         "source": f"{_RUNDATA}/resolv.conf", "options": ["bind", "rprivate"]},
        {"destination": "/dev/shm", "type": "bind", "source": f"{_USERDATA}/shm",
         "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]},
        {"destination": "/run/.containerenv", "type": "bind",
         "source": f"{_RUNDATA}/.containerenv", "options": ["bind", "rprivate"]},
        {"destination": "/etc/hostname", "type": "bind", "source": f"{_RUNDATA}/hostname",
         "options": ["bind", "rprivate"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "annotations": {
        "io.container.manager": "libpod",
        "io.kubernetes.cri-o.Created": "2024-05-02T10:11:12.123456789Z",
        "io.kubernetes.cri-o.TTY": "false",
        "io.podman.annotations.autoremove": "TRUE",
        "io.podman.annotations.init": "FALSE",
        "io.podman.annotations.privileged": "FALSE",
        "io.podman.annotations.publish-all": "FALSE",
        "org.opencontainers.image.stopSignal": "15",
    },
    "linux": {
        "sysctl": {"net.ipv4.ping_group_range": "0 0"},
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}],
            "memory": {"limit": 134217728, "swap": 268435456},
            "pids": {"limit": 2048},
        },
        "cgroupsPath": f"machine.slice:libpod:{_CID}",
        "namespaces": [
            {"type": "pid"},
            {"type": "network", "path": "/run/netns/netns-6b2c52fd-ae2e-cd2a-7a21-dc1b2e5b4b1c"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "cgroup"},
        ],
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["bdflush", "kexec_load", "nfsservctl", "swapon", "userfaultfd"],
                 "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["accept", "brk", "clone", "close", "execve", "exit_group", "mmap",
                           "openat", "read", "rt_sigaction", "write"],
                 "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"}]},
            ],
        },
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                        "/proc/scsi", "/sys/firmware", "/sys/fs/selinux", "/sys/dev/block"],
        "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}

_HOOK = {"path": "/usr/libexec/hook", "args": ["hook", "--stage"], "env": ["X=1"],
         "timeout": 5}

# Every field of the model set to something other than its default (zeros where "set to 0"
# differs from "unset"), so round trips cover the whole model.
FULL_CONFIG: dict[str, Any] = {
    "ociVersion": "1.1.0",
    "process": {
        "terminal": True,
        "consoleSize": {"height": 40, "width": 120},
        "user": {"uid": 1000, "gid": 1000, "umask": 0, "additionalGids": [5, 100]},
        "args": ["/bin/app", "--flag"],
        "env": ["A=1"],
        "cwd": "/work",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                         "inheritable": ["CAP_KILL"], "permitted": ["CAP_KILL"],
                         "ambient": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
        "noNewPrivileges": True,
        "apparmorProfile": "cocoon-default",
        "oomScoreAdj": 0,
        "selinuxLabel": "system_u:system_r:container_t:s0",
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "box",
    "domainname": "example.org",
    "mounts": [{"destination": "/data", "type": "bind", "source": "/srv/data",
                "options": ["rbind", "ro"]},
               {"destination": "/tmp"}],
    "hooks": {stage: [_HOOK] for stage in ("prestart", "createRuntime", "createContainer",
                                          "startContainer", "poststart", "poststop")},
    "annotations": {"org.example": "yes"},
    "linux": {
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "resources": {
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 0, "minor": 0, "access": "rw"}],
            "memory": {"limit": 268435456, "reservation": 0, "swap": -1, "kernel": 0,
                       "kernelTCP": 0, "swappiness": 0, "disableOOMKiller": False,
                       "useHierarchy": True, "checkBeforeUpdate": False},
            "cpu": {"shares": 1024, "quota": -1, "burst": 0, "period": 100000,
                    "realtimeRuntime": 0, "realtimePeriod": 0, "cpus": "0-1", "mems": "0",
                    "idle": 0},
            "pids": {"limit": 0},
            "blockIO": {"weight": 0, "leafWeight": 10,
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 500,
                                          "leafWeight": 0}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}],
                        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2}],
                        "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 3}],
                        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 0, "priorities": [{"name": "eth0", "priority": 0}]},
            "unified": {"memory.high": "max"},
        },
        "cgroupsPath": "/cocoon/box",
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"},
                       {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "user"},
                       {"type": "cgroup"}, {"type": "time"}],
        "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                     "fileMode": 438, "uid": 0, "gid": 0},
                    {"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0}],
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 0,
            "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/seccomp.sock", "listenerMetadata": "meta",
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0,
                          "args": [{"index": 1, "value": 0, "valueTwo": 7,
                                    "op": "SCMP_CMP_MASKED_EQ"}]}],
        },
        "rootfsPropagation": "rslave",
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
        "mountLabel": "system_u:object_r:container_file_t:s0",
        "personality": {"domain": "LINUX32", "flags": ["NONE_DEFINED_YET"]},
    },
}


def test_default_spec_parses() -> None:
    spec = parse_spec(default_spec())
    assert spec.process is not None and spec.linux is not None
    assert spec.process.args == ("sh",) and spec.process.terminal
    assert spec.root.readonly and spec.root.path == "rootfs"
    assert spec.linux.namespace("cgroup") is not None


def test_podman_config_parses() -> None:
    spec = parse_spec(PODMAN_CONFIG)
    assert spec.process is not None and spec.linux is not None
    assert spec.process.user.umask == 0o22
    assert spec.process.oom_score_adj == 0
    assert spec.process.rlimits[2].hard == 2**64 - 1
    assert spec.mounts[6].options == ("ro", "rbind", "rprivate")
    assert spec.annotations["io.container.manager"] == "libpod"
    netns = spec.linux.namespace("network")
    assert netns is not None and netns.path.startswith("/run/netns/")
    seccomp = spec.linux.seccomp
    assert seccomp is not None and seccomp.default_errno_ret == 38
    assert seccomp.syscalls[0] == LinuxSyscall(
        names=("bdflush", "kexec_load", "nfsservctl", "swapon", "userfaultfd"),
        action="SCMP_ACT_ERRNO", errno_ret=1)
    assert seccomp.syscalls[2].args[0].op == "SCMP_CMP_EQ"


@pytest.mark.parametrize("config", [default_spec(), PODMAN_CONFIG, FULL_CONFIG],
                         ids=["default", "podman", "full"])
def test_dict_spec_dict_round_trip(config: dict[str, Any]) -> None:
    spec = parse_spec(config)
    assert spec.to_dict() == config
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec


def test_load_spec_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(PODMAN_CONFIG, indent=2))
    assert load_spec(path) == parse_spec(PODMAN_CONFIG)


def test_unknown_members_are_ignored_and_null_is_absent() -> None:
    config = copy.deepcopy(PODMAN_CONFIG)
    config["vm"] = {"hypervisor": {"path": "/usr/bin/qemu"}}
    config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 0}
    config["linux"]["intelRdt"] = {"closID": "x"}
    config["hooks"] = None
    assert parse_spec(config) == parse_spec(PODMAN_CONFIG)


def _with(path: str, value: Any) -> dict[str, Any]:
    """PODMAN_CONFIG with the member at dotted `path` ([n] for list items) set or deleted."""
    config = copy.deepcopy(PODMAN_CONFIG)
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node: Any = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    key_or_index: Any = int(last) if isinstance(node, list) else last
    if value is _DELETE:
        del node[key_or_index]
    else:
        node[key_or_index] = value
    return config


_DELETE = object()

ERRORS = [
    # wrong types
    ("process.user.uid", "abc", 'process.user.uid: expected an integer, got "abc"'),
    ("process.user.uid", True, "process.user.uid: expected an integer, got true"),
    ("process.user.uid", 1.5, "process.user.uid: expected an integer, got 1.5"),
    ("process.terminal", 1, "process.terminal: expected true or false, got 1"),
    ("process.args", "sh", 'process.args: expected a list, got "sh"'),
    ("process.env[1]", 7, "process.env[1]: expected a string, got 7"),
    ("mounts[6].options[0]", None, "mounts[6].options[0]: expected a string, got null"),
    ("mounts[2]", [], "mounts[2]: expected an object, got a list"),
    ("linux.sysctl", ["a"], "linux.sysctl: expected an object, got a list"),
    ("annotations", {"io.x": 5}, 'annotations["io.x"]: expected a string, got 5'),
    ("linux.resources.memory.limit", "128m",
     'linux.resources.memory.limit: expected an integer, got "128m"'),
    # ranges
    ("process.user.gid", -1, "process.user.gid: expected an unsigned 32-bit integer, got -1"),
    ("process.user.additionalGids[0]", 2**32,
     "process.user.additionalGids[0]: expected an unsigned 32-bit integer, got 4294967296"),
    ("process.rlimits[0].hard", 2**64,
     "process.rlimits[0].hard: expected an unsigned 64-bit integer"),
    # missing required fields
    ("ociVersion", _DELETE, "ociVersion: required field missing"),
    ("root", _DELETE, "root: required field missing"),
    ("root.path", _DELETE, "root.path: required field missing"),
    ("root.path", "", "root.path: must name the root filesystem"),
    ("process.args", _DELETE, "process.args: required field missing"),
    ("process.cwd", _DELETE, "process.cwd: required field missing"),
    ("linux.seccomp.syscalls[1].action", _DELETE,
     "linux.seccomp.syscalls[1].action: required field missing"),
    # rules
    ("process.args", [], "process.args: must name the program to run"),
    ("process.cwd", "work", 'process.cwd: the working directory must be an absolute path, '
     'got "work"'),
    ("ociVersion", "2.0.0", 'ociVersion: unsupported version "2.0.0"'),
    ("linux.namespaces[5].type", "pid", 'linux.namespaces[5].type: duplicate namespace "pid"'),
    ("linux.resources.devices[0].access", "rwx",
     'linux.resources.devices[0].access: expected letters from "rwm", got "rwx"'),
    ("hooks.prestart", [{"path": "hook"}],
     'hooks.prestart[0].path: a hook must be an absolute path, got "hook"'),
    ("linux.seccomp.syscalls[0].names", [],
     "linux.seccomp.syscalls[0].names: must name at least one syscall"),
    # unknown enumeration values
    ("linux.namespaces[0].type", "pidns",
     'linux.namespaces[0].type: unknown value "pidns"; expected one of "pid", "network"'),
    ("linux.seccomp.defaultAction", "SCMP_ACT_NOPE",
     'linux.seccomp.defaultAction: unknown value "SCMP_ACT_NOPE"'),
    ("linux.seccomp.architectures[1]", "SCMP_ARCH_Z80",
     'linux.seccomp.architectures[1]: unknown value "SCMP_ARCH_Z80"'),
    ("linux.seccomp.syscalls[2].args[0].op", "SCMP_CMP_LIKE",
     'linux.seccomp.syscalls[2].args[0].op: unknown value "SCMP_CMP_LIKE"'),
    ("process.rlimits[0].type", "RLIMIT_FILES",
     'process.rlimits[0].type: unknown value "RLIMIT_FILES"'),
    ("linux.rootfsPropagation", "recursive",
     'linux.rootfsPropagation: unknown value "recursive"'),
    ("linux.devices", [{"path": "/dev/x", "type": "z"}],
     'linux.devices[0].type: unknown value "z"; expected one of "c", "b", "u", "p"'),
]


@pytest.mark.parametrize(("path", "value", "message"), ERRORS,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in ERRORS])
def test_errors_name_their_json_path(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(_with(path, value), source="/b/config.json")
    assert str(caught.value).startswith(f"/b/config.json: {message}")
    assert "\n" not in str(caught.value)


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match=r"^config.json: expected an object, got a list$"):
        parse_spec([PODMAN_CONFIG])


def test_file_that_is_not_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "ociVersion": "1.0.2",\n  "root": {"path": "rootfs",}\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    assert str(caught.value) == (f"{path}: not valid JSON: Expecting property name enclosed in "
                                 "double quotes at line 3 column 29")
    assert caught.value.evidence["line"] == 3


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "Expecting value at line 1 column 1"),
    (b'{"ociVersion": NaN}', "NaN is not a JSON number"),
    (b'{"ociVersion": "\xff"}', "not UTF-8 at byte 16"),
])
def test_malformed_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not valid JSON") as caught:
        load_spec(path)
    assert problem in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.json: cannot read: No such file"):
        load_spec(tmp_path / "config.json")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_raises_only_config_error(value: Any) -> None:
    try:
        spec = parse_spec(value)
    except ConfigError:
        return
    assert isinstance(spec, Spec)  # pragma: no cover - random values almost never validate


def _subtrees(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every member, descending into the first item of each list only."""
    out = [path]
    if isinstance(node, dict):
        for key, item in node.items():
            out += _subtrees(item, (*path, key))
    elif isinstance(node, list) and node:
        out += _subtrees(node[0], (*path, 0))
    return out


_PODMAN_PATHS = _subtrees(PODMAN_CONFIG)[1:]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_PODMAN_PATHS), _json)
def test_any_member_replaced_by_any_json_raises_only_config_error(
        where: tuple[Any, ...], value: Any) -> None:
    config = copy.deepcopy(PODMAN_CONFIG)
    node: Any = config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    try:
        parse_spec(config)
    except ConfigError as err:
        assert str(err).startswith("config.json: ")
