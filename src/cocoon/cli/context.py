"""What every verb gets besides its own arguments: where state lives and how to log."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/run/cocoon")


@dataclass(frozen=True)
class Context:
    root: Path
    debug: bool
    log_path: str | None
    log_format: str
    systemd_cgroup: bool
    log_level: str = "WARNING"

    @classmethod
    def from_args(cls, args: argparse.Namespace, lenient: bool = False,
                  quiet: bool = False) -> Context:
        """The flags, else the configuration (`[runtime]`); `lenient` (verbs that report a
        broken configuration themselves): its defaults when the file is broken. A `quiet`
        verb (it logs nothing) given `--root` does not read the file: engines call `state`
        many times, always with `--root`."""
        if quiet and args.root:
            return cls(root=Path(args.root).absolute(), debug=args.debug, log_path=args.log,
                       log_format=args.log_format or "text",
                       systemd_cgroup=args.systemd_cgroup)
        from cocoon.config import current as settings
        from cocoon.config.schema import Runtime
        from cocoon.errors import SettingsError

        try:
            runtime = settings().runtime
        except SettingsError:
            if not lenient:
                raise
            runtime = Runtime()
        root = Path(args.root or runtime.state_root)
        log_file = args.log or (str(runtime.log_file) if runtime.log_file else None)
        return cls(root=root.absolute(), debug=args.debug, log_path=log_file,
                   log_format=args.log_format or runtime.log_format,
                   systemd_cgroup=args.systemd_cgroup, log_level=runtime.log_level.upper())
