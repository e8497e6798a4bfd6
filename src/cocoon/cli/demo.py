"""`cocoon demo`: run a container from the built-in busybox image in its own VM.

The main job of the README: no registry, no engine; the image is built from Debian's
busybox-static by `cocoon assets build`. The container prints the kernel it sees, which is the
guest's, not the host's.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context

SCRIPT = (
    'echo "Hello from a container in its own VM."; '
    'echo "  container hostname: $(hostname)"; '
    'echo "  guest kernel:       $(uname -r)"; '
    'echo "  processes it sees:  $(ls -d /proc/[0-9]* | wc -l) (PID 1 is: $(cat /proc/1/comm))"; '
    'echo "  memory in the VM:   $(awk \'/MemTotal/ {print $2}\' /proc/meminfo) kB"'
)


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run a busybox container in its own VM")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="command to run instead of the greeting")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    import json

    from cocoon.guest import assets
    from cocoon.oci.default import default_spec
    from cocoon.runtime.operations import CreateOptions

    print(f"host kernel: {platform.release()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="cocoon-demo-"))
    try:
        shutil.copytree(assets.ensure_busybox_rootfs(), work / "rootfs", symlinks=True)
        spec = default_spec()
        spec["process"]["terminal"] = False
        spec["process"]["args"] = args.command or ["sh", "-c", SCRIPT]
        spec["root"] = {"path": "rootfs", "readonly": False}
        spec["hostname"] = "cocoon-demo"
        (work / "config.json").write_text(json.dumps(spec))
        return runtime(ctx).run_foreground(f"demo-{os.getpid()}",
                                           CreateOptions(bundle=work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
