from cocoon.protocols.gen import kata_oci_pb2 as _kata_oci_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnableDebugConsoleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableDebugConsoleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BindStreamRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "stderr")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    stderr: bool
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., stderr: _Optional[bool] = ...) -> None: ...

class BindStreamResponse(_message.Message):
    __slots__ = ("bound", "port", "token")
    BOUND_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    bound: bool
    port: int
    token: bytes
    def __init__(self, bound: _Optional[bool] = ..., port: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...

class BindStdinRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class StreamEndRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "stderr", "stdin")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    stderr: bool
    stdin: bool
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., stderr: _Optional[bool] = ..., stdin: _Optional[bool] = ...) -> None: ...

class StreamEndResponse(_message.Message):
    __slots__ = ("bytes",)
    BYTES_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    def __init__(self, bytes: _Optional[int] = ...) -> None: ...

class CriuOptions(_message.Message):
    __slots__ = ("image_dir", "work_dir", "tcp_established", "file_locks")
    IMAGE_DIR_FIELD_NUMBER: _ClassVar[int]
    WORK_DIR_FIELD_NUMBER: _ClassVar[int]
    TCP_ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    FILE_LOCKS_FIELD_NUMBER: _ClassVar[int]
    image_dir: str
    work_dir: str
    tcp_established: bool
    file_locks: bool
    def __init__(self, image_dir: _Optional[str] = ..., work_dir: _Optional[str] = ..., tcp_established: _Optional[bool] = ..., file_locks: _Optional[bool] = ...) -> None: ...

class CheckpointContainerRequest(_message.Message):
    __slots__ = ("container_id", "criu", "leave_running")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CRIU_FIELD_NUMBER: _ClassVar[int]
    LEAVE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    criu: CriuOptions
    leave_running: bool
    def __init__(self, container_id: _Optional[str] = ..., criu: _Optional[_Union[CriuOptions, _Mapping]] = ..., leave_running: _Optional[bool] = ...) -> None: ...

class CheckpointContainerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestoreContainerRequest(_message.Message):
    __slots__ = ("container_id", "OCI", "criu")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    OCI_FIELD_NUMBER: _ClassVar[int]
    CRIU_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    OCI: _kata_oci_pb2.Spec
    criu: CriuOptions
    def __init__(self, container_id: _Optional[str] = ..., OCI: _Optional[_Union[_kata_oci_pb2.Spec, _Mapping]] = ..., criu: _Optional[_Union[CriuOptions, _Mapping]] = ...) -> None: ...

class RestoreContainerResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class GuestStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GuestStatsResponse(_message.Message):
    __slots__ = ("memory_total_bytes", "memory_available_bytes", "cpu_user_seconds", "cpu_system_seconds", "cpu_idle_seconds", "load1", "load5", "load15", "cpus", "processes")
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_USER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_SYSTEM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    LOAD5_FIELD_NUMBER: _ClassVar[int]
    LOAD15_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    memory_total_bytes: int
    memory_available_bytes: int
    cpu_user_seconds: float
    cpu_system_seconds: float
    cpu_idle_seconds: float
    load1: float
    load5: float
    load15: float
    cpus: int
    processes: int
    def __init__(self, memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., cpu_user_seconds: _Optional[float] = ..., cpu_system_seconds: _Optional[float] = ..., cpu_idle_seconds: _Optional[float] = ..., load1: _Optional[float] = ..., load5: _Optional[float] = ..., load15: _Optional[float] = ..., cpus: _Optional[int] = ..., processes: _Optional[int] = ...) -> None: ...

class ListeningPortsRequest(_message.Message):
    __slots__ = ("known", "wait_ms")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    known: _containers.RepeatedScalarFieldContainer[int]
    wait_ms: int
    def __init__(self, known: _Optional[_Iterable[int]] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class ListeningPortsResponse(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ports: _Optional[_Iterable[int]] = ...) -> None: ...

class PortConnectRequest(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class PortConnectResponse(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: int
    def __init__(self, connection: _Optional[int] = ...) -> None: ...

class PortWriteRequest(_message.Message):
    __slots__ = ("connection", "data")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    connection: int
    data: bytes
    def __init__(self, connection: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PortWriteResponse(_message.Message):
    __slots__ = ("len",)
    LEN_FIELD_NUMBER: _ClassVar[int]
    len: int
    def __init__(self, len: _Optional[int] = ...) -> None: ...

class PortReadRequest(_message.Message):
    __slots__ = ("connection", "len")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    LEN_FIELD_NUMBER: _ClassVar[int]
    connection: int
    len: int
    def __init__(self, connection: _Optional[int] = ..., len: _Optional[int] = ...) -> None: ...

class PortReadResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PortCloseRequest(_message.Message):
    __slots__ = ("connection", "write_only")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    WRITE_ONLY_FIELD_NUMBER: _ClassVar[int]
    connection: int
    write_only: bool
    def __init__(self, connection: _Optional[int] = ..., write_only: _Optional[bool] = ...) -> None: ...

class PortCloseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WarmUpRequest(_message.Message):
    __slots__ = ("rootfs",)
    ROOTFS_FIELD_NUMBER: _ClassVar[int]
    rootfs: str
    def __init__(self, rootfs: _Optional[str] = ...) -> None: ...

class WarmUpResponse(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    def __init__(self, seconds: _Optional[float] = ...) -> None: ...

class TrimMemoryRequest(_message.Message):
    __slots__ = ("keep_free_bytes",)
    KEEP_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    keep_free_bytes: int
    def __init__(self, keep_free_bytes: _Optional[int] = ...) -> None: ...

class TrimMemoryResponse(_message.Message):
    __slots__ = ("mem_free_bytes", "zeroed_bytes", "seconds")
    MEM_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ZEROED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    mem_free_bytes: int
    zeroed_bytes: int
    seconds: float
    def __init__(self, mem_free_bytes: _Optional[int] = ..., zeroed_bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
