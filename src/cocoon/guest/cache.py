"""The asset cache on disk: where it is, and how builders share it safely.

Several processes may ask for the same asset at once (a test run and a `cocoon run`, two shims).
Every builder therefore works the same way: look for the finished result without a lock (the
fast path), otherwise take an exclusive fcntl lock for that kind of asset, look again (another
process may have finished meanwhile), build into a temporary directory beside the destination
and rename it into place. A crash leaves only a temporary directory that the next build removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cocoon.config import current as settings
from cocoon.errors import AssetError

DEFAULT_CACHE_DIR = Path("/var/lib/cocoon")
ENV_VAR = "COCOON_ASSET_DIR"
_TMP_PREFIX = ".tmp-"

logger = logging.getLogger("cocoon.guest.cache")


def default_cache_dir() -> Path:
    """`runtime.asset_dir`: `$COCOON_ASSET_DIR` if set, else the file's, else /var/lib/cocoon."""
    return settings().runtime.asset_dir


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    path = (cache_dir or default_cache_dir()).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AssetError(f"cannot create the asset cache {path}: {err.strerror}",
                         path=str(path)) from err
    return path


@contextlib.contextmanager
def locked(cache: Path, name: str) -> Iterator[None]:
    """Hold the exclusive lock `<cache>/locks/<name>.lock` for the duration of the block.

    Locks of different names are independent; never nest the same name in one process (flock
    locks belong to the open file, so a second open of the same lock file would wait forever).
    """
    lock_dir = cache / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def building(dest: Path) -> Iterator[Path]:
    """A fresh temporary directory that becomes `dest` when the block succeeds.

    Call it with the asset's lock held. Stale temporary directories of earlier crashed builds
    of the same parent are removed first; on failure the temporary directory is removed too.
    """
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{_TMP_PREFIX}{dest.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{dest.name}-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the asset from unprivileged readers
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
        _fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable cache file %s: %s", path, err)
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
