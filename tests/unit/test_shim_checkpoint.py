"""The shim's reading of containerd's checkpoint requests (shim/checkpoint.py), without a VM;
tests/integration/test_containerd_checkpoint.py drives them through ctr."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2

from cocoon.errors import RPCError
from cocoon.protocols.gen import runc_options_pb2
from cocoon.shim import checkpoint
from cocoon.ttrpc.status import StatusCode


def packed(options: runc_options_pb2.CheckpointOptions) -> any_pb2.Any:
    return any_pb2.Any(type_url="containerd.runc.v1.CheckpointOptions",
                       value=options.SerializeToString())


def test_no_options_are_containerds_defaults() -> None:
    assert checkpoint.parse_options(any_pb2.Any()) == checkpoint.Options()
    assert checkpoint.Options().exit is False


def test_runc_options_are_read() -> None:
    parsed = checkpoint.parse_options(packed(runc_options_pb2.CheckpointOptions(
        exit=True, open_tcp=True, file_locks=True, image_path="/x")))
    assert parsed == checkpoint.Options(exit=True, tcp_established=True, file_locks=True,
                                        image_path="/x")


def test_terminal_and_foreign_options_are_refused() -> None:
    with pytest.raises(RPCError) as err:
        checkpoint.parse_options(packed(runc_options_pb2.CheckpointOptions(terminal=True)))
    assert err.value.code == StatusCode.UNIMPLEMENTED
    with pytest.raises(RPCError) as err:
        checkpoint.parse_options(any_pb2.Any(type_url="example.Other", value=b""))
    assert err.value.code == StatusCode.INVALID_ARGUMENT


def test_directories(tmp_path: Path) -> None:
    assert checkpoint.images_of(str(tmp_path), checkpoint.Options()) == tmp_path
    with pytest.raises(RPCError, match="does not exist"):
        checkpoint.images_of(str(tmp_path / "gone"), checkpoint.Options())
    with pytest.raises(RPCError, match="not made by Cocoon"):
        checkpoint.check_restorable(tmp_path)
    (tmp_path / "descriptors.json").write_text("[]")
    checkpoint.check_restorable(tmp_path)
