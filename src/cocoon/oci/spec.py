"""The OCI runtime configuration (config.json, runtime-spec 1.x, Linux) as frozen dataclasses.

Every other part of Cocoon reads a container's configuration through these types; they are
parsed strictly (wrong types, missing required fields, unknown enumeration values and a few
rules runc enforces raise `ConfigError` naming the JSON path) so that a bad config fails on the
host with a clear message instead of half-way through building a VM. Members Cocoon does not
model (Windows, Solaris, VM, intelRdt, scheduler, ...) are ignored, as runc ignores unknown ones.
`Spec.to_dict()` writes config.json back in the shape Go's encoder gives it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Annotated, Literal

from cocoon.errors import ConfigError
from cocoon.oci.jsonmodel import ALWAYS, FieldError, Int, JSONModel, Name, at

U16 = Annotated[int, Int(0, 2**16 - 1, "an unsigned 16-bit integer")]
U32 = Annotated[int, Int(0, 2**32 - 1, "an unsigned 32-bit integer")]
U64 = Annotated[int, Int(0, 2**64 - 1, "an unsigned 64-bit integer")]

NamespaceType = Literal["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]
DeviceType = Literal["c", "b", "u", "p"]
DeviceCgroupType = Literal["", "a", "c", "b"]
Propagation = Literal["", "private", "rprivate", "shared", "rshared", "slave", "rslave",
                      "unbindable", "runbindable"]
RlimitType = Literal["RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
                     "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
                     "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO",
                     "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK"]
SeccompAction = Literal["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                        "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                        "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"]
SeccompOp = Literal["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                    "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"]
SeccompFlag = Literal["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                      "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
SeccompArch = Literal["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
                      "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
                      "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
                      "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                      "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
                      "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
                      "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH",
                      "SCMP_ARCH_SHEB"]
PersonalityDomain = Literal["LINUX", "LINUX32"]

_VERSION = re.compile(r"1\.\d+\.\d+")
MAX_CONFIG_SIZE = 16 << 20  # a config.json is a few KiB; this is far beyond any real one


def _absolute(path: str, value: str, what: str) -> None:
    if not value.startswith("/"):
        raise FieldError(path, f"{what} must be an absolute path, got {json.dumps(value)}")


# --- process ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Box(JSONModel):
    height: U32
    width: U32


@dataclass(frozen=True, kw_only=True)
class User(JSONModel):
    uid: Annotated[U32, ALWAYS] = 0
    gid: Annotated[U32, ALWAYS] = 0
    umask: U32 | None = None
    additional_gids: tuple[U32, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LinuxCapabilities(JSONModel):
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class POSIXRlimit(JSONModel):
    type: RlimitType
    hard: U64
    soft: U64


@dataclass(frozen=True, kw_only=True)
class Process(JSONModel):
    terminal: bool = False
    console_size: Box | None = None
    user: Annotated[User, ALWAYS] = field(default_factory=User)
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str
    capabilities: LinuxCapabilities | None = None
    rlimits: tuple[POSIXRlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: str = ""
    oom_score_adj: int | None = None
    selinux_label: str = ""

    def check(self, path: str) -> None:
        if not self.args:
            raise FieldError(at(path, "args"), "must name the program to run, got an empty list")
        _absolute(at(path, "cwd"), self.cwd, "the working directory")


# --- root, mounts, hooks -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Root(JSONModel):
    path: str
    readonly: bool = False

    def check(self, path: str) -> None:
        if not self.path:
            raise FieldError(at(path, "path"), "must name the root filesystem, got an empty string")


@dataclass(frozen=True, kw_only=True)
class Mount(JSONModel):
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Hook(JSONModel):
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    def check(self, path: str) -> None:
        _absolute(at(path, "path"), self.path, "a hook")
        if self.timeout is not None and self.timeout <= 0:
            raise FieldError(at(path, "timeout"), f"must be positive, got {self.timeout}")


@dataclass(frozen=True, kw_only=True)
class Hooks(JSONModel):
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


# --- linux: namespaces, devices ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LinuxIDMapping(JSONModel):
    container_id: Annotated[U32, Name("containerID")]
    host_id: Annotated[U32, Name("hostID")]
    size: U32


@dataclass(frozen=True, kw_only=True)
class LinuxNamespace(JSONModel):
    type: NamespaceType
    path: str = ""


@dataclass(frozen=True, kw_only=True)
class LinuxDevice(JSONModel):
    path: str
    type: DeviceType
    major: Annotated[int, ALWAYS] = 0
    minor: Annotated[int, ALWAYS] = 0
    file_mode: U32 | None = None
    uid: U32 | None = None
    gid: U32 | None = None


# --- linux: resources ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LinuxDeviceCgroup(JSONModel):
    allow: bool
    type: DeviceCgroupType = ""
    major: int | None = None
    minor: int | None = None
    access: str = ""

    def check(self, path: str) -> None:
        if set(self.access) - set("rwm"):
            raise FieldError(at(path, "access"),
                             f'expected letters from "rwm", got {json.dumps(self.access)}')


@dataclass(frozen=True, kw_only=True)
class LinuxMemory(JSONModel):
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: Annotated[int | None, Name("kernelTCP")] = None
    swappiness: U64 | None = None
    disable_oom_killer: Annotated[bool | None, Name("disableOOMKiller")] = None
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@dataclass(frozen=True, kw_only=True)
class LinuxCPU(JSONModel):
    shares: U64 | None = None
    quota: int | None = None
    burst: U64 | None = None
    period: U64 | None = None
    realtime_runtime: int | None = None
    realtime_period: U64 | None = None
    cpus: str = ""
    mems: str = ""
    idle: int | None = None


@dataclass(frozen=True, kw_only=True)
class LinuxPids(JSONModel):
    limit: int


@dataclass(frozen=True, kw_only=True)
class LinuxWeightDevice(JSONModel):
    major: int
    minor: int
    weight: U16 | None = None
    leaf_weight: U16 | None = None


@dataclass(frozen=True, kw_only=True)
class LinuxThrottleDevice(JSONModel):
    major: int
    minor: int
    rate: U64


@dataclass(frozen=True, kw_only=True)
class LinuxBlockIO(JSONModel):
    weight: U16 | None = None
    leaf_weight: U16 | None = None
    weight_device: tuple[LinuxWeightDevice, ...] = ()
    throttle_read_bps_device: tuple[LinuxThrottleDevice, ...] = ()
    throttle_write_bps_device: tuple[LinuxThrottleDevice, ...] = ()
    throttle_read_iops_device: Annotated[tuple[LinuxThrottleDevice, ...],
                                         Name("throttleReadIOPSDevice")] = ()
    throttle_write_iops_device: Annotated[tuple[LinuxThrottleDevice, ...],
                                          Name("throttleWriteIOPSDevice")] = ()


@dataclass(frozen=True, kw_only=True)
class LinuxHugepageLimit(JSONModel):
    page_size: str
    limit: U64


@dataclass(frozen=True, kw_only=True)
class LinuxInterfacePriority(JSONModel):
    name: str
    priority: U32


@dataclass(frozen=True, kw_only=True)
class LinuxNetwork(JSONModel):
    class_id: Annotated[U32 | None, Name("classID")] = None
    priorities: tuple[LinuxInterfacePriority, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LinuxResources(JSONModel):
    devices: tuple[LinuxDeviceCgroup, ...] = ()
    memory: LinuxMemory | None = None
    cpu: LinuxCPU | None = None
    pids: LinuxPids | None = None
    block_io: Annotated[LinuxBlockIO | None, Name("blockIO")] = None
    hugepage_limits: tuple[LinuxHugepageLimit, ...] = ()
    network: LinuxNetwork | None = None
    unified: Mapping[str, str] = field(default_factory=dict)


# --- linux: seccomp, personality -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LinuxSeccompArg(JSONModel):
    index: U32
    value: U64
    value_two: U64 = 0
    op: SeccompOp


@dataclass(frozen=True, kw_only=True)
class LinuxSyscall(JSONModel):
    names: tuple[str, ...]
    action: SeccompAction
    errno_ret: U32 | None = None
    args: tuple[LinuxSeccompArg, ...] = ()

    def check(self, path: str) -> None:
        if not self.names:
            raise FieldError(at(path, "names"), "must name at least one syscall")


@dataclass(frozen=True, kw_only=True)
class LinuxSeccomp(JSONModel):
    default_action: SeccompAction
    default_errno_ret: U32 | None = None
    architectures: tuple[SeccompArch, ...] = ()
    flags: tuple[SeccompFlag, ...] = ()
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: tuple[LinuxSyscall, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LinuxPersonality(JSONModel):
    domain: PersonalityDomain
    flags: tuple[str, ...] = ()


# --- linux and the whole spec ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Linux(JSONModel):
    uid_mappings: tuple[LinuxIDMapping, ...] = ()
    gid_mappings: tuple[LinuxIDMapping, ...] = ()
    sysctl: Mapping[str, str] = field(default_factory=dict)
    resources: LinuxResources | None = None
    cgroups_path: str = ""
    namespaces: tuple[LinuxNamespace, ...] = ()
    devices: tuple[LinuxDevice, ...] = ()
    seccomp: LinuxSeccomp | None = None
    rootfs_propagation: Propagation = ""
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    mount_label: str = ""
    personality: LinuxPersonality | None = None

    def check(self, path: str) -> None:
        seen: set[str] = set()
        for i, namespace in enumerate(self.namespaces):
            if namespace.type in seen:
                raise FieldError(f"{at(path, 'namespaces')}[{i}].type",
                                 f'duplicate namespace "{namespace.type}"')
            seen.add(namespace.type)

    def namespace(self, kind: NamespaceType) -> LinuxNamespace | None:
        """The entry for namespace `kind`, or None when the container shares the runtime's."""
        return next((ns for ns in self.namespaces if ns.type == kind), None)


@dataclass(frozen=True, kw_only=True)
class Spec(JSONModel):
    oci_version: Annotated[str, Name("ociVersion")]
    process: Process | None = None
    root: Root
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    linux: Linux | None = None

    def check(self, path: str) -> None:
        if not _VERSION.match(self.oci_version):
            raise FieldError(at(path, "ociVersion"),
                             f"unsupported version {json.dumps(self.oci_version)}: "
                             "Cocoon implements runtime-spec 1.x")


def parse_spec(data: object, source: str = "config.json") -> Spec:
    """Validate parsed config.json content; errors read `<source>: <json path>: <problem>`."""
    try:
        return Spec.from_dict(data)
    except FieldError as err:
        raise ConfigError(f"{source}: {err}", source=source, path=err.path) from err


def load_spec(path: str | PathLike[str]) -> Spec:
    """Read and validate a config.json file."""
    source = str(path)
    try:  # not blocking on a FIFO, not reading /dev/zero to the end
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{source}: not a regular file", source=source)
            raw = file.read(MAX_CONFIG_SIZE + 1)
    except OSError as err:
        raise ConfigError(f"{source}: cannot read: {err.strerror}", source=source) from err
    if len(raw) > MAX_CONFIG_SIZE:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_SIZE >> 20} MiB", source=source)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: not UTF-8 at byte {err.start}",
                          source=source) from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: {err.msg} at line {err.lineno} column "
                          f"{err.colno}", source=source, line=err.lineno,
                          column=err.colno) from err
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{source}: not valid JSON: {err}", source=source) from err
    return parse_spec(data, source)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")
