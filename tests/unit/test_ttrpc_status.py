"""Status codes and the exception-to-status mapping used at every ttrpc server edge."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from cocoon import errors
from cocoon.protocols.gen import ttrpc_pb2
from cocoon.ttrpc.status import MAX_MESSAGE_CHARS, Status, StatusCode, code_name


def test_codes_are_grpcs() -> None:
    expected = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3,
                "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5, "ALREADY_EXISTS": 6,
                "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
                "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13,
                "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
    assert {c.name: c.value for c in StatusCode} == expected


def test_code_name_of_known_and_unknown_codes() -> None:
    assert code_name(5) == "NOT_FOUND"
    assert code_name(99) == "CODE_99"
    assert str(errors.RPCError(12, "nope")) == "UNIMPLEMENTED: nope"


@pytest.mark.parametrize(("exc", "code"), [
    (errors.RPCError(StatusCode.ABORTED, "x"), StatusCode.ABORTED),
    (errors.RPCError(77, "a code from the future"), 77),
    (errors.ContainerNotFoundError("no container c1"), StatusCode.NOT_FOUND),
    (errors.ContainerExistsError("c1 exists"), StatusCode.ALREADY_EXISTS),
    (errors.ContainerStateError("c1 is running"), StatusCode.FAILED_PRECONDITION),
    (errors.ConfigError("bad config"), StatusCode.INVALID_ARGUMENT),
    (errors.OversizedMessageError(5 << 20, 4 << 20), StatusCode.RESOURCE_EXHAUSTED),
    (errors.ConnectionLostError("gone"), StatusCode.UNAVAILABLE),
    (errors.VMDiedError("qemu exited"), StatusCode.UNAVAILABLE),
    (errors.AgentError("agent said no"), StatusCode.INTERNAL),
    (errors.CocoonError("ours, unclassified"), StatusCode.INTERNAL),
    (TimeoutError(), StatusCode.DEADLINE_EXCEEDED),
    (NotImplementedError(), StatusCode.UNIMPLEMENTED),
    (FileNotFoundError(2, "No such file"), StatusCode.NOT_FOUND),
    (PermissionError(13, "denied"), StatusCode.PERMISSION_DENIED),
    (ValueError("a bug"), StatusCode.UNKNOWN),
])
def test_exception_mapping(exc: BaseException, code: int) -> None:
    assert Status.from_exception(exc).code == code


def test_messages_are_one_bounded_line() -> None:
    assert Status.from_exception(ValueError("first\nsecond")).message == "ValueError: first"
    assert Status.from_exception(KeyError()).message == "KeyError"
    rpc = errors.RPCError(StatusCode.NOT_FOUND, "container c1")
    assert Status.from_exception(rpc).message == "container c1"  # no "NOT_FOUND: " prefix
    long = Status.from_exception(errors.CocoonError("x" * 5000)).message
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith("...")


def test_proto_round_trip_with_details() -> None:
    detail = any_pb2.Any(type_url="type.googleapis.com/x", value=b"\x01")
    status = Status(StatusCode.NOT_FOUND, "gone", (detail,))
    wire = status.to_proto().SerializeToString()
    back = Status.from_proto(ttrpc_pb2.Status.FromString(wire))
    assert back == status
    err = back.to_error(method="/s/m")
    assert err.code == StatusCode.NOT_FOUND and err.status_message == "gone"
    assert err.evidence["details"] == (detail,) and err.evidence["method"] == "/s/m"
    assert Status.from_exception(err) == status


def test_ok() -> None:
    assert Status().ok and not Status(StatusCode.CANCELLED).ok
