"""`cocoon version`: versions of the runtime, the spec it implements and what it drives."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from cocoon import __version__
from cocoon.cli.context import Context
from cocoon.oci.default import OCI_VERSION


def qemu_version() -> str:
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except OSError:
        return "not found"
    return out.splitlines()[0].removeprefix("QEMU emulator version ").strip() if out else "?"


def register(sub: Any) -> None:
    parser = sub.add_parser("version", help="print version information")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    print(f"cocoon version {__version__}")
    print(f"spec: {OCI_VERSION}")
    print(f"qemu: {qemu_version()}")
    return 0
