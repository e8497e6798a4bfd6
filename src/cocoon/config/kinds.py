"""The kinds of value a setting holds: each parses a TOML value and an environment variable's
text into the typed value, or refuses it with a message that says what is allowed.

A refusal is a `ValueError` whose text completes "KEY: ..." (the loader adds the file, line
and key, or the variable's name): `must be an integer from 64 to 1048576, not 'big'`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class Kind:
    """How one setting's value is read, checked and written back."""

    def describe(self) -> str:
        raise NotImplementedError

    def from_toml(self, value: object) -> Any:
        raise NotImplementedError

    def from_env(self, text: str) -> Any:
        raise NotImplementedError

    def to_toml(self, value: Any) -> str:
        raise NotImplementedError

    def refuse(self, value: object) -> ValueError:
        return ValueError(f"must be {self.describe()}, not {_shown(value)}")


@dataclass(frozen=True)
class Int(Kind):
    low: int
    high: int

    def describe(self) -> str:
        return f"an integer from {self.low} to {self.high}"

    def from_toml(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.refuse(value)
        if not self.low <= value <= self.high:
            raise self.refuse(value)
        return value

    def from_env(self, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise self.refuse(text) from None
        return self.from_toml(value)

    def to_toml(self, value: Any) -> str:
        return str(value)


@dataclass(frozen=True)
class IntList(Kind):
    """A list of integers in a range; in the environment, comma-separated."""

    low: int
    high: int

    def describe(self) -> str:
        return f"a list of integers from {self.low} to {self.high}"

    def from_toml(self, value: object) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise self.refuse(value)
        item = Int(self.low, self.high)
        try:
            return tuple(item.from_toml(v) for v in value)
        except ValueError:
            raise self.refuse(value) from None

    def from_env(self, text: str) -> tuple[int, ...]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        try:
            return self.from_toml([int(part) for part in parts])
        except ValueError:
            raise self.refuse(text) from None

    def to_toml(self, value: Any) -> str:
        return "[" + ", ".join(str(v) for v in value) + "]"


@dataclass(frozen=True)
class Choice(Kind):
    """One of a few words; `aliases` are also taken from the environment (as `1` for `on`)."""

    choices: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()
    fold_case: bool = True

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def from_toml(self, value: object) -> str:
        if not isinstance(value, str):
            raise self.refuse(value)
        word = value.strip().lower() if self.fold_case else value
        if word not in self.choices:
            raise self.refuse(value)
        return word

    def from_env(self, text: str) -> str:
        word = text.strip().lower() if self.fold_case else text
        return self.from_toml(dict(self.aliases).get(word, word))

    def to_toml(self, value: Any) -> str:
        return f'"{value}"'


@dataclass(frozen=True)
class Bool(Kind):
    """true or false; in the environment 1 or 0."""

    def describe(self) -> str:
        return "true or false"

    def from_toml(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.refuse(value)
        return value

    def from_env(self, text: str) -> bool:
        if text.strip() not in ("0", "1"):
            raise ValueError(f"must be 0 or 1, not {text!r}")
        return text.strip() == "1"

    def to_toml(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class AbsPath(Kind):
    """An absolute path; `optional`: the empty string means none (the documented fallback).
    A relative path in the environment is taken from the current directory, as before."""

    optional: bool = False

    def describe(self) -> str:
        return "an absolute path" + (' or "" for none' if self.optional else "")

    def from_toml(self, value: object) -> Path | None:
        if not isinstance(value, str):
            raise self.refuse(value)
        if not value:
            if self.optional:
                return None
            raise self.refuse(value)
        if not value.startswith("/") or "\0" in value:
            raise self.refuse(value)
        return Path(value)

    def from_env(self, text: str) -> Path | None:
        if not text:
            return self.from_toml(text)
        return Path(text).absolute()

    def to_toml(self, value: Any) -> str:
        return f'"{value}"' if value is not None else '""'
