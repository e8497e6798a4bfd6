"""`cocoon spec`: write a default config.json, as `runc spec` does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cocoon.cli.context import Context
from cocoon.errors import ConfigError
from cocoon.oci.default import default_spec


def register(sub: Any) -> None:
    parser = sub.add_parser("spec", help="create a new specification file (config.json)")
    parser.add_argument("-b", "--bundle", default=".", help="where to write config.json")
    parser.add_argument("--rootless", action="store_true",
                        help="not supported: containers run as root of their own VM")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.rootless:
        raise ConfigError("spec --rootless: rootless containers are not supported")
    path = Path(args.bundle) / "config.json"
    if path.exists():
        raise ConfigError(f"File {path} exists. Remove it first")
    try:
        path.write_text(json.dumps(default_spec(), indent="\t") + "\n")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from err
    return 0
