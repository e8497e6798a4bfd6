"""`cocoon install containerd` / `cocoon uninstall containerd`: the runtime handler in containerd's
configuration, as kata-deploy adds Kata's.

The configuration is edited with tomlkit, which keeps the operator's comments, order and layout.
Install adds one table, the CRI runtime handler (`runtime_type = "io.containerd.cocoon.v2"`,
plus `options.ConfigPath` when a Cocoon configuration file is named: containerd hands it to the
shim in its runtime options, as it does Kata's), marked by a comment on its header so that a
handler written by someone else is never replaced without `--force`. Before the first change the
file is copied to `<config>.cocoon-backup`; uninstall removes the table (and tables left empty
by that), and when what remains means what the backup means, it puts the backup's bytes back,
so an install and uninstall round trip leaves the file exactly as it was. Both are idempotent.

The shim binary must be on containerd's PATH: install links `containerd-shim-cocoon-v2` into
`bin_dir` (default /usr/local/bin) unless it already resolves there, and uninstall removes a
link it made. containerd reads its configuration at start: restart it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

from cocoon.errors import InstallError

DEFAULT_CONFIG = Path("/etc/containerd/config.toml")
DEFAULT_BIN_DIR = Path("/usr/local/bin")
HANDLER = "cocoon"
RUNTIME_TYPE = "io.containerd.cocoon.v2"
SHIM_NAME = "containerd-shim-cocoon-v2"
MARKER = "added by cocoon install"
BACKUP_SUFFIX = ".cocoon-backup"
# where the CRI plugin keeps its runtime handlers, by configuration version
CRI_RUNTIMES: dict[int, tuple[str, ...]] = {
    1: ("plugins", "cri", "containerd", "runtimes"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
}


@dataclass(frozen=True)
class Outcome:
    changed: bool
    message: str


def install(config: Path = DEFAULT_CONFIG, *, handler: str = HANDLER,
            cocoon_config: Path | None = None, bin_dir: Path | None = DEFAULT_BIN_DIR,
            force: bool = False) -> Outcome:
    """Add the handler to `config` (created when missing); nothing changes when it is there."""
    text = config.read_text() if config.exists() else "version = 2\n"
    doc = _parse(config, text)
    runtimes = _runtimes(config, doc, create=True)
    wanted = _handler_table(cocoon_config)
    notes: list[str] = []
    if bin_dir is not None:
        notes += _link_shim(bin_dir)
    existing = runtimes.get(handler)
    if existing is not None:
        if _plain(existing) == _plain(wanted) and _ours(existing):
            return Outcome(False, f"{config}: runtime handler {handler!r} already installed"
                           + "".join(f"; {n}" for n in notes))
        if not _ours(existing) and not force:
            raise InstallError(
                f"{config}: runtime handler {handler!r} exists and was not written by cocoon "
                f"install ({_describe(existing)}); --force replaces it")
        del runtimes[handler]
    runtimes[handler] = wanted
    if config.exists() and not _backup(config).exists():
        shutil.copy2(config, _backup(config))
    _write(config, tomlkit.dumps(doc))
    return Outcome(True, f"{config}: runtime handler {handler!r} ({RUNTIME_TYPE}) added; "
                   "restart containerd to use it" + "".join(f"; {n}" for n in notes))


def uninstall(config: Path = DEFAULT_CONFIG, *, handler: str = HANDLER,
              bin_dir: Path | None = DEFAULT_BIN_DIR, force: bool = False) -> Outcome:
    """Take the handler out of `config`; nothing changes when it is not there."""
    notes = _unlink_shim(bin_dir) if bin_dir is not None else []
    if not config.exists():
        return Outcome(False, f"{config}: no such file; nothing to remove"
                       + "".join(f"; {n}" for n in notes))
    doc = _parse(config, config.read_text())
    runtimes = _runtimes(config, doc, create=False)
    existing = runtimes.get(handler) if runtimes is not None else None
    if runtimes is None or existing is None:
        return Outcome(False, f"{config}: no runtime handler {handler!r}; nothing to remove"
                       + "".join(f"; {n}" for n in notes))
    if not _ours(existing) and not force:
        raise InstallError(f"{config}: runtime handler {handler!r} was not written by cocoon "
                           f"install ({_describe(existing)}); --force removes it")
    del runtimes[handler]
    _prune(doc, _path(config, doc))
    backup = _backup(config)
    text = tomlkit.dumps(doc)
    if backup.exists() and _same_without(backup, doc, handler):
        # the operator's bytes as they were before install (with a handler --force replaced)
        text = backup.read_text()
    _write(config, text)
    with contextlib.suppress(FileNotFoundError):
        backup.unlink()
    return Outcome(True, f"{config}: runtime handler {handler!r} removed; restart containerd"
                   + "".join(f"; {n}" for n in notes))


# --- the document --------------------------------------------------------------------------------

def _parse(path: Path, text: str) -> TOMLDocument:
    try:
        return tomlkit.parse(text)
    except ParseError as err:
        raise InstallError(f"{path}:{err.line}:{err.col}: not valid TOML: "
                           f"{str(err).split(' at line')[0]}") from err


def _path(config: Path, doc: TOMLDocument) -> tuple[str, ...]:
    version = doc.get("version", 1)
    if not isinstance(version, int) or version not in CRI_RUNTIMES:
        raise InstallError(f"{config}: version = {version!r}: cocoon install knows containerd "
                           f"configuration versions {', '.join(map(str, CRI_RUNTIMES))}")
    return CRI_RUNTIMES[version]


def _runtimes(config: Path, doc: TOMLDocument, *, create: bool) -> Any:
    """The table of runtime handlers (made on the way when `create`), or None."""
    node: Any = doc
    walked: list[str] = []
    for key in _path(config, doc):
        walked.append(key)
        child = node.get(key)
        if child is None:
            if not create:
                return None
            child = tomlkit.table(is_super_table=True)
            node[key] = child
        elif not isinstance(child, dict):
            raise InstallError(f"{config}: {'.'.join(walked)} is not a table "
                               f"({type(_plain(child)).__name__}): cannot add a runtime "
                               "handler under it")
        node = node[key]
    return node


def _same_without(backup: Path, doc: TOMLDocument, handler: str) -> bool:
    """Whether the backup, without its own `handler` if it had one, means what `doc` means."""
    try:
        before = _parse(backup, backup.read_text())
        runtimes = _runtimes(backup, before, create=False)
    except InstallError:
        return False
    if runtimes is not None and handler in runtimes:
        del runtimes[handler]
        _prune(before, _path(backup, before))
    return bool(_plain(before) == _plain(doc))


def _prune(doc: TOMLDocument, path: tuple[str, ...]) -> None:
    """Remove the tables of `path` that the removal left empty, innermost first."""
    for depth in range(len(path), 0, -1):
        node: Any = doc
        for key in path[:depth - 1]:
            node = node.get(key)
            if node is None:
                return
        leaf = node.get(path[depth - 1])
        if isinstance(leaf, dict) and not leaf:
            del node[path[depth - 1]]
        else:
            return


def _handler_table(cocoon_config: Path | None) -> Table:
    table = tomlkit.table()
    table.comment(MARKER)
    table["runtime_type"] = RUNTIME_TYPE
    # a VM has no host devices to hand a privileged container (as kata-deploy sets it)
    table["privileged_without_host_devices"] = True
    if cocoon_config is not None:
        options = tomlkit.table()
        options["ConfigPath"] = str(cocoon_config)
        table["options"] = options
    return table


def _ours(table: Any) -> bool:
    trivia = getattr(table, "trivia", None)
    return trivia is not None and MARKER in (trivia.comment or "")


def _plain(value: Any) -> Any:
    """Plain Python values, so two documents compare by meaning, not by layout."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _describe(table: Any) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in _plain(table).items()
                     if not isinstance(v, dict)) or "empty"


def _backup(config: Path) -> Path:
    return config.with_name(config.name + BACKUP_SUFFIX)


def _write(path: Path, text: str) -> None:
    """Replace `path` atomically, keeping its mode (0644 for a new file)."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- the shim binary -----------------------------------------------------------------------------

def shim_binary() -> Path:
    """The shim of this installation: beside the running `cocoon` (the same virtualenv)."""
    return Path(sys.executable).with_name(SHIM_NAME)


def _link_shim(bin_dir: Path) -> list[str]:
    target = shim_binary()
    if not target.exists():
        raise InstallError(f"{target}: the containerd shim of this installation is missing")
    link = bin_dir / SHIM_NAME
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return []
    if link.exists() or link.is_symlink():
        raise InstallError(f"{link} exists and is not a link to {target}: remove it or "
                           "choose another --bin-dir")
    bin_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return [f"linked {link} -> {target}"]


def _unlink_shim(bin_dir: Path) -> list[str]:
    link = bin_dir / SHIM_NAME
    if link.is_symlink() and Path(os.readlink(link)).name == SHIM_NAME:
        link.unlink()
        return [f"removed {link}"]
    return []
