"""Conversions between the OCI dataclasses and the agent API's `grpc.Spec` messages (kata_oci).

The host sends a container's config to the agent as `grpc.Spec` inside CreateContainerRequest
(and a Process in ExecProcessRequest, LinuxResources in UpdateContainerRequest); everything else
in Cocoon works with `cocoon.oci.spec` types, so generated types stay inside this module.

The conversion is lossless for every field both sides have: each dataclass is paired with the
Kata message of the same name, each field with the message field named in `PROTO_NAMES` or, by
default, the capitalised JSON name. Optional values use the messages' presence bits (see
kata_oci.proto), so "unset" and 0 stay apart. Message fields only Kata has are listed in
`PROTO_ONLY` and left empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_args, get_origin

from google.protobuf.message import Message

from cocoon.oci import spec as oci
from cocoon.oci.jsonmodel import FieldSpec, JSONModel, fields_of, strip_optional
from cocoon.protocols.gen import kata_oci_pb2 as pb

M = TypeVar("M", bound=JSONModel)

# Message field names that are not the capitalised JSON name, per dataclass.
PROTO_NAMES: dict[type[JSONModel], dict[str, str]] = {
    oci.Spec: {"oci_version": "Version"},
    oci.Process: {"oom_score_adj": "OOMScoreAdj"},
    oci.User: {"uid": "UID", "gid": "GID"},
    oci.Mount: {"destination": "destination", "type": "type", "source": "source",
                "options": "options"},
    oci.Linux: {"uid_mappings": "UIDMappings", "gid_mappings": "GIDMappings"},
    oci.LinuxDevice: {"uid": "UID", "gid": "GID"},
    oci.LinuxResources: {"cpu": "CPU"},
    oci.LinuxHugepageLimit: {"page_size": "Pagesize"},
    oci.LinuxSyscall: {"errno_ret": "errnoret"},
}

# Message fields with no dataclass counterpart (Windows/Solaris stubs, Intel RDT, Windows user).
PROTO_ONLY: dict[str, frozenset[str]] = {
    "Spec": frozenset({"Solaris", "Windows"}),
    "User": frozenset({"Username"}),
    "Linux": frozenset({"IntelRdt"}),
}


def spec_to_proto(spec: oci.Spec) -> pb.Spec:
    """The agent API form of a whole config."""
    return _to_proto(spec)  # type: ignore[return-value]


def spec_from_proto(message: pb.Spec) -> oci.Spec:
    """A config received over the agent API (not re-validated: call parse_spec on to_dict())."""
    return _from_proto(oci.Spec, message)


def process_to_proto(process: oci.Process) -> pb.Process:
    return _to_proto(process)  # type: ignore[return-value]


def process_from_proto(message: pb.Process) -> oci.Process:
    return _from_proto(oci.Process, message)


def resources_to_proto(resources: oci.LinuxResources) -> pb.LinuxResources:
    return _to_proto(resources)  # type: ignore[return-value]


def resources_from_proto(message: pb.LinuxResources) -> oci.LinuxResources:
    return _from_proto(oci.LinuxResources, message)


def message_class(cls: type[JSONModel]) -> type[Message]:
    """The Kata message class paired with dataclass `cls`."""
    message: type[Message] = getattr(pb, cls.__name__)
    return message


_PAIRS: dict[type, tuple[tuple[FieldSpec, str], ...]] = {}


def field_pairs(cls: type[JSONModel]) -> tuple[tuple[FieldSpec, str], ...]:
    """Each field of `cls` with the name of its message field (checked to exist)."""
    cached = _PAIRS.get(cls)
    if cached is None:
        cached = _PAIRS[cls] = _pair_fields(cls)
    return cached


def _pair_fields(cls: type[JSONModel]) -> tuple[tuple[FieldSpec, str], ...]:
    overrides = PROTO_NAMES.get(cls, {})
    known = message_class(cls).DESCRIPTOR.fields_by_name
    pairs = []
    for spec in fields_of(cls):
        name = overrides.get(spec.name, spec.json[:1].upper() + spec.json[1:])
        if name not in known:
            raise TypeError(f"{cls.__name__}.{spec.name}: no field {name} in grpc.{cls.__name__}")
        if spec.optional and not known[name].has_presence:
            raise TypeError(f"grpc.{cls.__name__}.{name} cannot tell unset from zero: "
                            "declare it optional in kata_oci.proto")
        pairs.append((spec, name))
    return tuple(pairs)


def _bare(hint: Any) -> Any:
    """The type under Optional and Annotated wrappers."""
    hint = strip_optional(hint)
    while get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return strip_optional(hint)


def _to_proto(obj: JSONModel) -> Message:
    message = message_class(type(obj))()
    for spec, name in field_pairs(type(obj)):
        value = getattr(obj, spec.name)
        if value is None:
            continue
        if isinstance(value, JSONModel):
            getattr(message, name).CopyFrom(_to_proto(value))
        elif isinstance(value, tuple):
            target = getattr(message, name)
            for item in value:
                if isinstance(item, JSONModel):
                    target.add().CopyFrom(_to_proto(item))
                else:
                    target.append(item)
        elif isinstance(value, Mapping):
            getattr(message, name).update(value)
        else:
            setattr(message, name, value)
    return message


def _from_proto(cls: type[M], message: Message) -> M:
    kwargs: dict[str, Any] = {}
    fields = message.DESCRIPTOR.fields_by_name
    for spec, name in field_pairs(cls):
        descriptor = fields[name]
        value = getattr(message, name)
        hint = _bare(spec.hint)
        if spec.optional and descriptor.has_presence and not message.HasField(name):
            continue
        if get_origin(hint) is tuple:
            element = _bare(get_args(hint)[0])
            if isinstance(element, type) and issubclass(element, JSONModel):
                kwargs[spec.name] = tuple(_from_proto(element, item) for item in value)
            else:
                kwargs[spec.name] = tuple(value)
        elif get_origin(hint) is Mapping:
            kwargs[spec.name] = dict(value)
        elif isinstance(hint, type) and issubclass(hint, JSONModel):
            kwargs[spec.name] = _from_proto(hint, value)
        else:
            kwargs[spec.name] = value
    return cls(**kwargs)
