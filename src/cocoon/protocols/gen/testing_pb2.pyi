from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("payload", "text")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    text: str
    def __init__(self, payload: _Optional[bytes] = ..., text: _Optional[str] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("payload", "text", "sequence", "metadata", "time_remaining")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIME_REMAINING_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    text: str
    sequence: int
    metadata: _containers.RepeatedScalarFieldContainer[str]
    time_remaining: float
    def __init__(self, payload: _Optional[bytes] = ..., text: _Optional[str] = ..., sequence: _Optional[int] = ..., metadata: _Optional[_Iterable[str]] = ..., time_remaining: _Optional[float] = ...) -> None: ...

class RepeatRequest(_message.Message):
    __slots__ = ("payload", "count")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    count: int
    def __init__(self, payload: _Optional[bytes] = ..., count: _Optional[int] = ...) -> None: ...

class SleepRequest(_message.Message):
    __slots__ = ("millis",)
    MILLIS_FIELD_NUMBER: _ClassVar[int]
    millis: int
    def __init__(self, millis: _Optional[int] = ...) -> None: ...

class SleepResponse(_message.Message):
    __slots__ = ("slept_millis",)
    SLEPT_MILLIS_FIELD_NUMBER: _ClassVar[int]
    slept_millis: int
    def __init__(self, slept_millis: _Optional[int] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("code", "message", "crash")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CRASH_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    crash: bool
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., crash: _Optional[bool] = ...) -> None: ...

class DiscardResponse(_message.Message):
    __slots__ = ("messages", "bytes")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    messages: int
    bytes: int
    def __init__(self, messages: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
