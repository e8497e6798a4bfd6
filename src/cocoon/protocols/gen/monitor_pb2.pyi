from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttachNetworkRequest(_message.Message):
    __slots__ = ("netns",)
    NETNS_FIELD_NUMBER: _ClassVar[int]
    netns: str
    def __init__(self, netns: _Optional[str] = ...) -> None: ...

class AttachNetworkResponse(_message.Message):
    __slots__ = ("interfaces",)
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    interfaces: int
    def __init__(self, interfaces: _Optional[int] = ...) -> None: ...

class ClaimRequest(_message.Message):
    __slots__ = ("config_json",)
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    config_json: str
    def __init__(self, config_json: _Optional[str] = ...) -> None: ...

class ClaimResponse(_message.Message):
    __slots__ = ("ready_json",)
    READY_JSON_FIELD_NUMBER: _ClassVar[int]
    ready_json: str
    def __init__(self, ready_json: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Phase(_message.Message):
    __slots__ = ("name", "seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    seconds: float
    def __init__(self, name: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("sandbox_id", "monitor_pid", "qemu_pid", "state", "phases", "accel", "kernel_release", "boot_id", "console_log", "virtiofsd_pid", "started_from")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    MONITOR_PID_FIELD_NUMBER: _ClassVar[int]
    QEMU_PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ACCEL_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSOLE_LOG_FIELD_NUMBER: _ClassVar[int]
    VIRTIOFSD_PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_FROM_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    monitor_pid: int
    qemu_pid: int
    state: str
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    accel: str
    kernel_release: str
    boot_id: str
    console_log: str
    virtiofsd_pid: int
    started_from: str
    def __init__(self, sandbox_id: _Optional[str] = ..., monitor_pid: _Optional[int] = ..., qemu_pid: _Optional[int] = ..., state: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ..., accel: _Optional[str] = ..., kernel_release: _Optional[str] = ..., boot_id: _Optional[str] = ..., console_log: _Optional[str] = ..., virtiofsd_pid: _Optional[int] = ..., started_from: _Optional[str] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("grace_seconds",)
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grace_seconds: float
    def __init__(self, grace_seconds: _Optional[float] = ...) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
