"""gRPC status codes, and the one place where exceptions become statuses and back.

Every ttrpc response carries a `google.rpc.Status`. A server turns whatever its handler raised
into one with `Status.from_exception()` (the mapping is documented in docs/agent-protocol.md);
a client turns a non-OK status back into an `RPCError` with `Status.to_error()`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2

from cocoon import errors
from cocoon.protocols.gen import ttrpc_pb2

MAX_MESSAGE_CHARS = 1024


class StatusCode(enum.IntEnum):
    """The gRPC status codes (google/rpc/code.proto)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    """`NOT_FOUND` for 5; a peer may send codes we do not know, which still get a readable name."""
    try:
        return StatusCode(code).name
    except ValueError:
        return f"CODE_{code}"


# Most specific class wins (looked up along the exception's MRO). Exceptions not covered by any
# entry become UNKNOWN; Cocoon errors without a closer entry become INTERNAL.
EXCEPTION_CODES: dict[type[BaseException], StatusCode] = {
    errors.OversizedMessageError: StatusCode.RESOURCE_EXHAUSTED,
    errors.ConnectionLostError: StatusCode.UNAVAILABLE,
    errors.ConfigError: StatusCode.INVALID_ARGUMENT,
    errors.ContainerNotFoundError: StatusCode.NOT_FOUND,
    errors.ContainerExistsError: StatusCode.ALREADY_EXISTS,
    errors.ContainerStateError: StatusCode.FAILED_PRECONDITION,
    errors.HostCheckError: StatusCode.FAILED_PRECONDITION,
    errors.VMDiedError: StatusCode.UNAVAILABLE,
    errors.CocoonError: StatusCode.INTERNAL,
    TimeoutError: StatusCode.DEADLINE_EXCEEDED,
    NotImplementedError: StatusCode.UNIMPLEMENTED,
    FileNotFoundError: StatusCode.NOT_FOUND,
    FileExistsError: StatusCode.ALREADY_EXISTS,
    PermissionError: StatusCode.PERMISSION_DENIED,
}


def code_for_exception(err: BaseException) -> StatusCode | int:
    if isinstance(err, errors.RPCError):
        return err.code
    for cls in type(err).__mro__:
        code = EXCEPTION_CODES.get(cls)
        if code is not None:
            return code
    return StatusCode.UNKNOWN


def one_line(err: BaseException) -> str:
    """A message fit for a status: one line, bounded, naming the type when it is not ours."""
    if isinstance(err, errors.RPCError):
        text = err.status_message
    elif isinstance(err, errors.CocoonError):
        text = err.message
    else:
        detail = str(err).strip()
        text = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= MAX_MESSAGE_CHARS else line[:MAX_MESSAGE_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class Status:
    """A call's outcome in the `google.rpc.Status` form, as plain data."""

    code: int = StatusCode.OK
    message: str = ""
    details: tuple[any_pb2.Any, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == StatusCode.OK

    @classmethod
    def from_exception(cls, err: BaseException) -> Status:
        details = tuple(err.evidence.get("details", ())) if isinstance(err, errors.RPCError) else ()
        return cls(int(code_for_exception(err)), one_line(err), details)

    @classmethod
    def from_proto(cls, msg: ttrpc_pb2.Status) -> Status:
        return cls(msg.code, msg.message, tuple(msg.details))

    def to_proto(self) -> ttrpc_pb2.Status:
        return ttrpc_pb2.Status(code=int(self.code), message=self.message, details=self.details)

    def to_error(self, **evidence: Any) -> errors.RPCError:
        if self.details:
            evidence["details"] = self.details
        return errors.RPCError(int(self.code), self.message, **evidence)
