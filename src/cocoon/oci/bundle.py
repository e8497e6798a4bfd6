"""An OCI bundle: a directory holding config.json and the container's root filesystem.

Loading one validates everything the host can check before a VM is started: the directory, the
config, and that the rootfs it names exists and is a directory. The rootfs path is resolved
against the bundle (as runc does for a relative `root.path`) so later steps never depend on the
current directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cocoon.errors import ConfigError
from cocoon.oci.spec import Spec, load_spec

log = logging.getLogger("cocoon.oci.bundle")

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: `path` and `rootfs` are absolute, `spec` is validated."""

    path: Path
    spec: Spec
    rootfs: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME


def load_bundle(directory: str | os.PathLike[str]) -> Bundle:
    """Load the bundle in `directory`; ConfigError names the path at fault."""
    path = Path(os.path.abspath(directory))
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise ConfigError(f"bundle {path} {what}", bundle=str(path))
    config = path / CONFIG_NAME
    if not config.exists():
        raise ConfigError(f"bundle {path} has no {CONFIG_NAME}", bundle=str(path))
    spec = load_spec(config)
    rootfs = Path(os.path.normpath(path / spec.root.path))  # an absolute root.path wins
    if not rootfs.is_dir():
        what = "does not exist" if not rootfs.exists() else "is not a directory"
        raise ConfigError(f"{config}: root.path: rootfs {rootfs} {what}", bundle=str(path),
                          rootfs=str(rootfs))
    log.debug("loaded bundle %s (rootfs %s)", path, rootfs)
    return Bundle(path=path, spec=spec, rootfs=rootfs)
