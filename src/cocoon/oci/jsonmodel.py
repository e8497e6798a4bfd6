"""Typed mapping between frozen dataclasses and JSON, with errors that name the JSON path.

The OCI config model is declared once, as dataclasses with type hints; parsing, validation and
serialisation are driven by those hints, so a field cannot be parsed one way and written another.
What a hint means:

- `str`, `bool`, `int` (with an `Int` range in `Annotated`, default signed 64-bit), a `Literal`
  of strings (an enumeration), `tuple[X, ...]` (a JSON list), `Mapping[str, str]` (a JSON object
  of strings), or another `JSONModel` (a nested object);
- `X | None`: an optional value (a Go pointer in the runtime spec), written whenever it is set;
- a field without a default is required; a field with a default is left out of the JSON while it
  is empty (Go's `omitempty`) unless `ALWAYS` is in its `Annotated` metadata;
- the JSON name is the field name in camelCase unless a `Name` says otherwise.

JSON `null` counts as absent, as Go's decoder treats it. Unknown JSON keys are ignored (runc
ignores them). Errors are `FieldError`s carrying the path (`process.user.uid`,
`mounts[2].options[0]`, `linux.sysctl["net.ipv4.ip_forward"]`); the caller that knows which file
was read turns them into the project's `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin, get_type_hints


@dataclasses.dataclass(frozen=True)
class Int:
    """The range of an integer field and how to name it in an error."""

    low: int
    high: int
    description: str


@dataclasses.dataclass(frozen=True)
class Name:
    """The JSON name of a field whose name is not the camelCase of the Python one."""

    json: str


class _Always:
    """Marker: write the field even when it holds its empty default (no `omitempty` in Go)."""

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS = _Always()

I64_RANGE = Int(-(2**63), 2**63 - 1, "a 64-bit integer")


class FieldError(Exception):
    """The value at `path` is invalid: `problem` says how."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def at(path: str, key: str) -> str:
    """The path of member `key` of the object at `path`."""
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """A short rendering of a JSON value for an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + '..."'


class JSONModel:
    """Base of the config dataclasses: parsing from and writing to JSON."""

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Self:
        """Build and validate an instance from parsed JSON; `path` locates `data` in the file."""
        if not isinstance(data, dict):
            raise FieldError(path, f"expected an object, got {describe(data)}")
        kwargs: dict[str, Any] = {}
        for spec in _fields(cls):
            where = at(path, spec.json)
            raw = data.get(spec.json)
            if raw is None:
                if spec.required:
                    raise FieldError(where, "required field missing")
                continue
            kwargs[spec.name] = _parse(spec.hint, raw, where)
        obj = cls(**kwargs)
        obj.check(path)
        return obj

    def check(self, path: str) -> None:
        """Rules beyond types (an absolute path, a non-empty list); raise FieldError."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for this instance, leaving out empty optional members as Go does."""
        out: dict[str, Any] = {}
        for spec in _fields(type(self)):
            value = getattr(self, spec.name)
            if value is None:
                continue
            if not (spec.required or spec.always or spec.optional) and _is_empty(value):
                continue
            out[spec.json] = _dump(value)
        return out


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """How one dataclass field maps to JSON (derived from its type hint)."""

    name: str
    json: str
    hint: Any  # the type hint without the field-level Annotated metadata
    required: bool
    optional: bool
    always: bool


_FIELDS: dict[type, tuple[FieldSpec, ...]] = {}


def _fields(cls: type[JSONModel]) -> tuple[FieldSpec, ...]:
    cached = _FIELDS.get(cls)
    if cached is None:
        cached = _FIELDS[cls] = _derive_fields(cls)
    return cached


def _derive_fields(cls: type[JSONModel]) -> tuple[FieldSpec, ...]:
    hints = get_type_hints(cls, include_extras=True)
    specs = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[field.name]
        metadata: tuple[Any, ...] = ()
        if get_origin(hint) is Annotated:
            hint, *rest = get_args(hint)
            metadata = tuple(rest)
        names = [m.json for m in metadata if isinstance(m, Name)]
        ints = [m for m in metadata if isinstance(m, Int)]
        if ints:  # an Int range written at field level stays with the value's type
            hint = Annotated[hint, ints[0]]
        required = (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING)
        specs.append(FieldSpec(
            name=field.name,
            json=names[0] if names else _camel(field.name),
            hint=hint,
            required=required,
            optional=_is_optional(hint),
            always=any(m is ALWAYS for m in metadata),
        ))
    return tuple(specs)


def fields_of(cls: type[JSONModel]) -> tuple[FieldSpec, ...]:
    """The JSON view of a model's fields, in declaration order (for converters and tests)."""
    return _fields(cls)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def strip_optional(hint: Any) -> Any:
    """`X` for `X | None` (and for a plain `X`)."""
    if _is_optional(hint):
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return inner
    return hint


def _parse(hint: Any, value: object, path: str) -> Any:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *metadata = get_args(hint)
        ranges = [m for m in metadata if isinstance(m, Int)]
        if ranges:
            return _parse_int(value, ranges[0], path)
        return _parse(base, value, path)
    if origin in (Union, types.UnionType):
        return _parse(strip_optional(hint), value, path)
    if origin is Literal:
        choices = get_args(hint)
        if not isinstance(value, str):
            raise FieldError(path, f"expected a string, got {describe(value)}")
        if value not in choices:
            listed = ", ".join(json.dumps(c) for c in choices if c)
            raise FieldError(path, f"unknown value {describe(value)}; expected one of {listed}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise FieldError(path, f"expected a list, got {describe(value)}")
        element = get_args(hint)[0]
        return tuple(_parse(element, item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, dict):
            raise FieldError(path, f"expected an object, got {describe(value)}")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                raise FieldError(f"{path}[{json.dumps(key)}]",
                                 f"expected a string, got {describe(item)}")
            out[key] = item
        return out
    if hint is str:
        if not isinstance(value, str):
            raise FieldError(path, f"expected a string, got {describe(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {describe(value)}")
        return value
    if hint is int:
        return _parse_int(value, I64_RANGE, path)
    if isinstance(hint, type) and issubclass(hint, JSONModel):
        return hint.from_dict(value, path)
    raise TypeError(f"jsonmodel cannot handle the type hint {hint!r}")


def _parse_int(value: object, limits: Int, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(path, f"expected an integer, got {describe(value)}")
    if not limits.low <= value <= limits.high:
        raise FieldError(path, f"expected {limits.description}, got {value}")
    return value


def _is_empty(value: object) -> bool:
    return value in ("", False, 0) or (isinstance(value, tuple | Mapping) and not value)


def _dump(value: object) -> Any:
    if isinstance(value, JSONModel):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_dump(item) for item in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value
