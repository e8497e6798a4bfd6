"""The `cocoon` command as tests drive it: a subprocess with files for its stdio.

Files, not pipes: a container's per-process shim keeps the caller's stdio for the container (as
under runc), so a pipe would not reach end of file when `create` or `run --detach` returns.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

COCOON = str(Path(sys.executable).parent / "cocoon")


class Cli:
    """`cocoon --root ROOT ...`."""

    def __init__(self, root: Path, timeout: float = 240.0) -> None:
        self.root = root
        self.timeout = timeout

    def __call__(self, *args: str,
                 timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([COCOON, "--root", str(self.root), *args], stdout=out,
                                  stderr=err, stdin=subprocess.DEVNULL,
                                  timeout=timeout or self.timeout, check=False)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(),
                                               err.read())

    def ok(self, *args: str, timeout: float | None = None) -> str:
        """Run and insist on success; return stdout."""
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"cocoon {' '.join(args)}: {result.stderr}"
        return result.stdout
