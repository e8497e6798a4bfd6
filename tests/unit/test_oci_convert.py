"""Spec <-> grpc.Spec: lossless both ways, on the wire as Kata's field numbers imply."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cocoon.oci import spec as oci
from cocoon.oci.convert import (
    PROTO_ONLY,
    field_pairs,
    message_class,
    process_from_proto,
    process_to_proto,
    resources_from_proto,
    resources_to_proto,
    spec_from_proto,
    spec_to_proto,
)
from cocoon.oci.default import default_spec
from cocoon.oci.jsonmodel import JSONModel
from cocoon.protocols.gen import kata_oci_pb2 as pb
from tests.unit.test_oci_spec import FULL_CONFIG, PODMAN_CONFIG

MODELS = [obj for obj in vars(oci).values()
          if isinstance(obj, type) and issubclass(obj, JSONModel) and obj is not JSONModel]


@pytest.mark.parametrize("config", [default_spec(), PODMAN_CONFIG, FULL_CONFIG],
                         ids=["default", "podman", "full"])
def test_spec_proto_spec_round_trip_through_bytes(config: dict[str, Any]) -> None:
    spec = oci.parse_spec(config)
    wire = spec_to_proto(spec).SerializeToString()
    received = pb.Spec()
    received.ParseFromString(wire)
    assert spec_from_proto(received) == spec
    assert spec_from_proto(received).to_dict() == config


def _set_fields(node: object, found: set[tuple[str, str]]) -> None:
    """Record (class, field) for every field of every model in `node` that is not empty."""
    if isinstance(node, tuple):
        for item in node:
            _set_fields(item, found)
    if not isinstance(node, JSONModel):
        return
    for field in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, field.name)
        if value is not None and value != field.default and value not in ((), {}):
            found.add((type(node).__name__, field.name))
        _set_fields(value, found)


def test_full_config_sets_every_field_of_the_model() -> None:
    """The round trip above covers the whole model only if FULL_CONFIG sets every field."""
    found: set[tuple[str, str]] = set()
    _set_fields(oci.parse_spec(FULL_CONFIG), found)
    everything = {(cls.__name__, f.name) for cls in MODELS
                  for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert everything - found == set()


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_every_message_field_is_mapped_or_known_to_be_kata_only(cls: type[JSONModel]) -> None:
    mapped = {name for _, name in field_pairs(cls)}
    all_fields = set(message_class(cls).DESCRIPTOR.fields_by_name)
    assert all_fields - mapped == PROTO_ONLY.get(cls.__name__, frozenset())


def test_process_golden_bytes() -> None:
    """Process{User{}, Args ["sh"], Cwd "/", OOMScoreAdj 0}: fields 3, 4, 6 and 11."""
    process = oci.Process(args=("sh",), cwd="/", oom_score_adj=0)
    wire = process_to_proto(process).SerializeToString()
    assert wire == bytes([
        0x1A, 0x00,                    # 3 User: an empty message
        0x22, 0x02, *b"sh",            # 4 Args
        0x32, 0x01, *b"/",             # 6 Cwd
        0x58, 0x00,                    # 11 OOMScoreAdj: varint 0, present because it is set
    ])


def test_unset_and_zero_stay_apart() -> None:
    unset = oci.Process(args=("sh",), cwd="/")
    assert process_from_proto(process_to_proto(unset)).oom_score_adj is None
    user = oci.User(umask=0)
    spec = oci.Spec(oci_version="1.1.0", root=oci.Root(path="r"),
                    process=oci.Process(args=("a",), cwd="/", user=user))
    received = spec_from_proto(spec_to_proto(spec))
    assert received.process is not None and received.process.user.umask == 0
    assert received.linux is None and received.hooks is None


def test_resources_for_update_container() -> None:
    resources = oci.LinuxResources(
        memory=oci.LinuxMemory(limit=64 << 20, swap=-1),
        cpu=oci.LinuxCPU(quota=50000, period=100000),
        pids=oci.LinuxPids(limit=32),
        unified={"memory.high": "max"})
    message = resources_to_proto(resources)
    assert message.Memory.Limit == 64 << 20
    assert not message.Memory.HasField("Reservation")
    assert message.CPU.Quota == 50000 and message.Pids.Limit == 32
    assert resources_from_proto(message) == resources


def test_kata_field_numbers_on_the_wire() -> None:
    """A few fields picked from Kata's oci.proto, checked by number rather than by name."""
    fields = {(m, f.name): f.number for m in ("Spec", "Process", "Linux", "LinuxSyscall", "User")
              for f in getattr(pb, m).DESCRIPTOR.fields}
    assert fields[("Spec", "Version")] == 1 and fields[("Spec", "Linux")] == 8
    assert fields[("Process", "Capabilities")] == 7
    assert fields[("Process", "SelinuxLabel")] == 12
    assert fields[("Linux", "Seccomp")] == 8 and fields[("Linux", "MountLabel")] == 12
    assert fields[("LinuxSyscall", "errnoret")] == 3
    assert fields[("User", "AdditionalGids")] == 3
    # Cocoon's additions stay clear of Kata's numbers
    assert fields[("Spec", "Domainname")] >= 100 and fields[("User", "Umask")] >= 100
