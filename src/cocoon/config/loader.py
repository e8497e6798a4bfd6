"""Reading the configuration: defaults, then the file, then the environment (env > file >
default), validated into typed `Settings` that remember where each value came from.

The file is /etc/cocoon/config.toml, or the one `COCOON_CONFIG` names (the CLI's `--config`
and the containerd shim's runtime options set that variable for the process and its
children). A missing default file means every default; a missing named one is an error. Every
error names the file, the line and the key: `/etc/cocoon/config.toml:12: hypervisor.memory_mib:
must be an integer from 64 to 1048576, not 'big'`; unknown sections and keys are errors too.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocoon.config import schema
from cocoon.errors import SettingsError

DEFAULT_PATH = Path("/etc/cocoon/config.toml")
ENV_CONFIG = "COCOON_CONFIG"
DEFAULT = "default"


@dataclass(frozen=True)
class Settings:
    hypervisor: schema.Hypervisor = field(default_factory=schema.Hypervisor)
    templates: schema.Templates = field(default_factory=schema.Templates)
    pool: schema.Pool = field(default_factory=schema.Pool)
    agent: schema.Agent = field(default_factory=schema.Agent)
    runtime: schema.Runtime = field(default_factory=schema.Runtime)
    share: schema.Share = field(default_factory=schema.Share)
    # "section.key" -> where its value came from: "default", "<file>:<line>", "env VAR"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    path: Path | None = None  # the file read, if there was one

    def value(self, name: str) -> Any:
        section, key = name.split(".", 1)
        return getattr(getattr(self, section), key)

    def source(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)


def config_path(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read, and whether it was named (then it must exist)."""
    named = environ.get(ENV_CONFIG, "")
    return (Path(named).absolute(), True) if named else (DEFAULT_PATH, False)


def read_file(path: Path, named: bool) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise SettingsError(f"{path}: no such configuration file (named by {ENV_CONFIG} "
                                "or --config)", path=str(path)) from None
        return None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
        raise SettingsError(f"{path}: cannot read the configuration file: {reason}",
                            path=str(path)) from err


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def _bare(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def locate(text: str, section: str, key: str | None = None) -> int | None:
    """The line (1-based) where `section` (or `section.key`) is written, as far as a line scan
    can tell: `[section]` then `key =`, a dotted `section.key =`, or the section's header."""
    current = ""
    header = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _HEADER.match(line)
        if match:
            current = _bare(match.group(1))
            if current == section and header is None:
                if key is None:
                    return number
                header = number
            continue
        left, eq, _ = line.partition("=")
        if not eq or line.lstrip().startswith("#"):
            continue
        name = _bare(left.strip())
        full = f"{current}.{name}" if current else name
        if full == section or full.startswith(section + "."):
            if key is None or full == f"{section}.{key}":
                return number
            header = header or number  # `section = { key = ... }`, or another dotted key
    return header


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def _suggest(word: str, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(word, known, n=1)
    return f"did you mean {close[0]}?" if close else "known: " + ", ".join(known)


def parse_file(path: Path, text: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The file's values by section and key, checked, and where each was written."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        found = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if found:
            message = message[:found.start()].rstrip() + f" (column {found.group(2)})"
        line = int(found.group(1)) if found else None
        raise SettingsError(f"{_where(path, line)}: not valid TOML: {message}",
                            path=str(path), line=line) from None
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for section, table in data.items():
        if section not in schema.SECTIONS:
            line = locate(text, section)
            raise SettingsError(f"{_where(path, line)}: {section}: unknown section "
                                f"({_suggest(section, tuple(schema.SECTIONS))})",
                                path=str(path), line=line, key=section)
        if not isinstance(table, dict):
            line = locate(text, section)
            raise SettingsError(f"{_where(path, line)}: {section}: must be a table "
                                f"([{section}])", path=str(path), line=line, key=section)
        fields = {f.name: f for f in dataclasses.fields(schema.SECTIONS[section])}
        for key, raw in table.items():
            line = locate(text, section, key)
            name = f"{section}.{key}"
            if key not in fields:
                raise SettingsError(f"{_where(path, line)}: {name}: unknown setting "
                                    f"({_suggest(key, tuple(fields))})",
                                    path=str(path), line=line, key=name)
            meta: schema.Meta = fields[key].metadata["setting"]
            try:
                values.setdefault(section, {})[key] = meta.kind.from_toml(raw)
            except ValueError as err:
                raise SettingsError(f"{_where(path, line)}: {name}: {err}",
                                    path=str(path), line=line, key=name) from None
            sources[name] = _where(path, line)
    return values, sources


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, the file, the environment, in rising precedence; `SettingsError` for a bad
    file or variable."""
    env = os.environ if environ is None else environ
    path, named = config_path(env)
    text = read_file(path, named)
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    if text is not None:
        values, sources = parse_file(path, text)
    for definition in schema.definitions():
        variable = definition.meta.env
        raw = env.get(variable, "") if variable else ""
        if not variable or not raw:
            continue
        try:
            parsed = definition.meta.kind.from_env(raw)
        except ValueError as err:
            raise SettingsError(f"{variable}: {err}", key=definition.name,
                                variable=variable) from None
        values.setdefault(definition.section, {})[definition.key] = parsed
        sources[definition.name] = f"env {variable}"
    sections = {name: cls(**values.get(name, {})) for name, cls in schema.SECTIONS.items()}
    return Settings(**sections, sources=sources,
                    path=path if text is not None else None)


_ENV_NAMES = (ENV_CONFIG, *(d.meta.env for d in schema.definitions() if d.meta.env))
_cache: tuple[tuple[Any, ...], Settings] | None = None


def _stamp(environ: Mapping[str, str]) -> tuple[Any, ...]:
    """What the settings depend on: the variables and the file's identity."""
    path, _ = config_path(environ)
    try:
        st = os.stat(path)
        file: tuple[int, ...] = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        file = ()
    return (*(environ.get(name, "") for name in _ENV_NAMES), file)


def current(environ: Mapping[str, str] | None = None) -> Settings:
    """This process's settings (read again only when the environment or the file changed);
    with `environ`, the settings that environment gives."""
    global _cache
    if environ is not None:
        return load(environ)
    stamp = _stamp(os.environ)
    if _cache is None or _cache[0] != stamp:
        _cache = (stamp, load(os.environ))
    return _cache[1]


def summary(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """One line for `cocoon check`: the file read and how many settings it and the
    environment set."""
    path, _ = config_path(os.environ if environ is None else environ)
    from_env = sum(1 for source in settings.sources.values() if source.startswith("env "))
    from_file = len(settings.sources) - from_env
    read = f"{path}: valid; {from_file} setting(s) from it" if settings.path else \
        f"{path} absent: defaults"
    return read + (f", {from_env} from the environment" if from_env else "")
