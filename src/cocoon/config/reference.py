"""Text generated from the settings' definitions: the reference in docs/operations.md
(`cocoon config reference`) and a commented file with every default (`cocoon config example`).
A unit test holds the page to this text."""

from __future__ import annotations

import dataclasses
from typing import Any

from cocoon.config import schema
from cocoon.config.loader import DEFAULT_PATH, Settings


def _doc(cls: type[Any]) -> str:
    return " ".join((cls.__doc__ or "").split())


def reference() -> str:
    """Markdown: one table per section (key, type, default, overriding variable, help)."""
    lines: list[str] = []
    for section, cls in schema.SECTIONS.items():
        lines += [f"### [{section}]", "", _doc(cls), "",
                  "| key | value | default | variable | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for item in dataclasses.fields(cls):
            meta: schema.Meta = item.metadata["setting"]
            env = f"`{meta.env}`" if meta.env else ""
            lines.append(f"| `{item.name}` | {meta.kind.describe()} | "
                         f"`{meta.kind.to_toml(item.default)}` | {env} | {meta.help} |")
        lines.append("")
    return "\n".join(lines)


def example() -> str:
    """A config.toml with every setting at its default, commented out, each with its help."""
    lines = [f"# {DEFAULT_PATH}: Cocoon's configuration (every value here is the default).",
             "# Uncomment a line to change it; `cocoon check --config-only` validates the file."]
    for section, cls in schema.SECTIONS.items():
        lines += ["", f"[{section}]", f"# {_doc(cls)}"]
        for item in dataclasses.fields(cls):
            meta: schema.Meta = item.metadata["setting"]
            env = f" (${meta.env})" if meta.env else ""
            lines += [f"# {meta.help}{env}",
                      f"#{item.name} = {meta.kind.to_toml(item.default)}"]
    return "\n".join(lines) + "\n"


def effective(settings: Settings) -> list[tuple[str, str, str]]:
    """Every setting as (name, value as TOML, where it came from)."""
    rows = []
    for definition in schema.definitions():
        value = settings.value(definition.name)
        rows.append((definition.name, definition.meta.kind.to_toml(value),
                     settings.source(definition.name)))
    return rows
