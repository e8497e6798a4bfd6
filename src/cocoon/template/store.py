"""Templates on disk: `<asset cache>/templates/<name>/` with `ram`, `state` and `template.json`.

A template directory is made under a temporary name and renamed into place complete, with
`template.json` (its spec, and the sizes and digest of its files) written last, so a directory
with that name is either whole or was damaged afterwards. `check` proves it whole before every
use, cheaply: the RAM file has the guest's size, the state file the size and SHA-256 recorded
for it. Files are only ever unlinked, never rewritten or truncated in place: clones map the RAM
file for as long as they run, and a file that shrank under them would kill them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon.config import current as settings
from cocoon.errors import TemplateError
from cocoon.template.spec import TemplateSpec

logger = logging.getLogger("cocoon.template.store")

TEMPLATES = "templates"
RAM = "ram"
STATE = "state"
META = "template.json"
CONSOLE = "console.log"
TMP_PREFIX = ".tmp-"
LOCK_POLL = 0.05
UNUSED_FOR = 3600.0  # seconds after its last use that a superseded template is removed


@dataclass(frozen=True)
class Template:
    """A template found whole on disk."""

    path: Path
    spec: TemplateSpec
    meta: dict[str, Any]

    @property
    def ram(self) -> Path:
        return self.path / RAM

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def name(self) -> str:
        return self.path.name


ENV_DIR = "COCOON_TEMPLATE_DIR"


def templates_dir(cache: Path) -> Path:
    """`runtime.template_dir` (`$COCOON_TEMPLATE_DIR`), else `<asset cache>/templates`."""
    return settings().runtime.template_dir or cache / TEMPLATES


def template_dir(cache: Path, spec: TemplateSpec) -> Path:
    return templates_dir(cache) / spec.name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check(path: Path, spec: TemplateSpec | None = None) -> Template:
    """The template at `path` if it is whole (and is `spec`'s); `TemplateError` saying what is
    wrong otherwise."""
    try:
        meta = json.loads((path / META).read_text())
        found = TemplateSpec.from_json(meta["spec"])
    except FileNotFoundError:
        raise TemplateError(f"template {path.name}: {META} is missing", path=str(path)) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TemplateError(f"template {path.name}: {META} is unreadable: {err}",
                            path=str(path)) from err
    if found.digest != meta.get("digest"):
        raise TemplateError(f"template {path.name}: {META} does not match its own digest",
                            path=str(path))
    if spec is not None and found.digest != spec.digest:
        raise TemplateError(f"template {path.name} is for other inputs (stale)",
                            path=str(path), have=found.digest, want=spec.digest)
    ram_bytes = found.memory_mib << 20
    try:
        ram_size = (path / RAM).stat().st_size
        state_size = (path / STATE).stat().st_size
    except FileNotFoundError as err:
        raise TemplateError(f"template {path.name}: {Path(str(err.filename)).name} is missing",
                            path=str(path)) from None
    if ram_size != ram_bytes:
        raise TemplateError(f"template {path.name}: its RAM file holds {ram_size} bytes, not "
                            f"the guest's {ram_bytes}", path=str(path))
    if state_size != meta.get("state_bytes"):
        raise TemplateError(f"template {path.name}: its state file holds {state_size} bytes, "
                            f"not the {meta.get('state_bytes')} saved", path=str(path))
    if sha256_file(path / STATE) != meta.get("state_sha256"):
        raise TemplateError(f"template {path.name}: its state file is not the one saved",
                            path=str(path))
    return Template(path, found, meta)


def find(cache: Path, spec: TemplateSpec) -> Template | None:
    """`spec`'s template if there is one; None if there is none; `TemplateError` if the one
    there is damaged. Finding it counts as a use (see `prune`)."""
    path = template_dir(cache, spec)
    if not path.exists():
        return None
    template = check(path, spec)
    with contextlib.suppress(OSError):
        os.utime(path / META)
    return template


def prune(cache: Path, keep: TemplateSpec, unused_for: float = UNUSED_FOR) -> list[str]:
    """Remove the templates `keep` supersedes: those made for the same VM shape from another
    guest image, kernel or QEMU, whose image is gone or that nobody used for `unused_for`
    seconds. Every change of the agent makes a new image, and each template holds about a
    hundred MiB, so without this the directory grows with every upgrade."""
    shape = {k: v for k, v in keep.inputs().items()
             if k not in ("image_digest", "kernel_id", "qemu_version", "format")}
    cutoff = time.time() - unused_for
    removed = []
    for path, found in listing(cache):
        if path.name == keep.name or not isinstance(found, Template):
            continue
        other = {k: v for k, v in found.spec.inputs().items() if k in shape}
        if other != shape:
            continue
        try:
            last_use = (path / META).stat().st_mtime
        except OSError:
            continue
        if not found.spec.initrd_path.exists() or last_use < cutoff:
            remove(path)
            removed.append(path.name)
    return removed


def listing(cache: Path) -> list[tuple[Path, Template | TemplateError]]:
    """Every template directory with the template or what is wrong with it."""
    base = templates_dir(cache)
    if not base.is_dir():
        return []
    found: list[tuple[Path, Template | TemplateError]] = []
    for path in sorted(base.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            found.append((path, check(path)))
        except TemplateError as err:
            found.append((path, err))
    return found


def remove(path: Path) -> None:
    """Unlink a template's files and its directory (running clones keep their mapping)."""
    if not path.exists():
        return
    for child in path.iterdir():
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            child.unlink()
    shutil.rmtree(path, ignore_errors=True)


def remove_stale_builds(cache: Path, name: str) -> None:
    """Temporary directories of builds that died: `name`'s (call with its lock held), and
    those of any other template nobody is building now (its lock free), so that a build
    killed for good (its template never asked for again) does not keep its files."""
    base = templates_dir(cache)
    for stale in base.glob(f"{TMP_PREFIX}*-*"):
        other = stale.name[len(TMP_PREFIX):].rsplit("-", 1)[0]
        if other == name:
            shutil.rmtree(stale, ignore_errors=True)
            continue
        try:
            fd = os.open(lock_path(cache, other), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # no lock file: not a build of this store's
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # being built now
        try:
            shutil.rmtree(stale, ignore_errors=True)
        finally:
            os.close(fd)


def lock_path(cache: Path, name: str) -> Path:
    return templates_dir(cache) / f".{name}.lock"


@contextlib.asynccontextmanager
async def locked(cache: Path, name: str, timeout: float) -> AsyncIterator[None]:
    """Hold the template's build lock (a flock, polled so the event loop keeps running)."""
    path = lock_path(cache, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TemplateError(f"template {name}: another process has been building "
                                        f"it for over {timeout:.0f} s", lock=str(path)) from None
                await asyncio.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)
