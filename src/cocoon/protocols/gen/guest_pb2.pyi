from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

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
