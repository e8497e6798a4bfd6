"""What every verb gets besides its own arguments: where state lives and how to log."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from cocoon.config import current as settings

DEFAULT_ROOT = Path("/run/cocoon")


@dataclass(frozen=True)
class Context:
    root: Path
    debug: bool
    log_path: str | None
    log_format: str
    systemd_cgroup: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        root = Path(args.root or settings().runtime.state_root)
        return cls(root=root.absolute(), debug=args.debug, log_path=args.log,
                   log_format=args.log_format, systemd_cgroup=args.systemd_cgroup)
