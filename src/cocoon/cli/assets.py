"""`cocoon assets build|show`: build the guest kernel and images, or say what is cached."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "assets", help="build or inspect the guest kernel and images")
    verbs = parser.add_subparsers(dest="assets_verb", metavar="ACTION", required=True)
    build = verbs.add_parser("build", help="fetch the kernel, build the floor initrd, the guest "
                                           "image and the busybox rootfs (cached when current)")
    build.add_argument("--cache", type=Path, default=None,
                       help="asset cache directory (default: $COCOON_ASSET_DIR or "
                            "/var/lib/cocoon)")
    build.set_defaults(func=run_build)
    show = verbs.add_parser("show", help="what is cached and whether it is current")
    show.add_argument("--cache", type=Path, default=None, help="asset cache directory")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)


class PhasePrinter:
    """Renders builder progress: one line per phase on stderr, with how long it took."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._open: tuple[str, int, int, float] | None = None

    def __call__(self, phase: str, step: int, total: int) -> None:
        self.close()
        self._open = (phase, step, total, time.monotonic())
        if self._tty:
            self._out.write(f"[{step}/{total}] {phase} ...")
            self._out.flush()

    def close(self) -> None:
        if self._open is None:
            return
        phase, step, total, started = self._open
        self._open = None
        line = f"[{step}/{total}] {phase}  {time.monotonic() - started:.2f}s"
        self._out.write(f"\r{line}   \n" if self._tty else f"{line}\n")
        self._out.flush()


def run_build(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.guest import assets

    printer = PhasePrinter(sys.stderr)
    started = time.monotonic()
    try:
        kernel = assets.ensure_kernel(args.cache, printer)
        floor = assets.ensure_floor_initrd(args.cache, printer)
        image = assets.ensure_guest_image(args.cache, printer)
        rootfs = assets.ensure_busybox_rootfs(args.cache, printer)
    finally:
        printer.close()
    print(f"kernel       {kernel.release} ({kernel.package} {kernel.package_version})")
    print(f"vmlinuz      {kernel.vmlinuz}")
    print(f"guest image  {image.digest[:16]} {image.initrd}")
    print(f"floor initrd {floor}")
    print(f"busybox      {rootfs}")
    print(f"done in {time.monotonic() - started:.2f}s", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.guest import status
    from cocoon.guest.cache import resolve_cache_dir

    info = status.describe(resolve_cache_dir(args.cache))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(status.render(info))
    return 0
