"""Run a script you do not trust in a throwaway VM, with a wall-clock timeout and a memory limit.

    .venv/bin/python examples/untrusted_script.py [SCRIPT]

Without SCRIPT, three built-in ones run: one that behaves, one that never ends and one that
eats memory. Each gets a fresh VM that is gone when its `with` block ends.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cocoon import Sandbox
from cocoon.errors import OutOfMemoryError, ProcessTimeoutError

SCRIPTS = {
    "well-behaved": "echo \"hello from $(hostname), $(nproc) CPU\"",
    "endless": "while :; do :; done",
    "memory-hungry": "awk 'BEGIN { s = \"x\"; while (1) s = s s }'",
}


def run_untrusted(name: str, script: str) -> str:
    with Sandbox(memory_mib=64, timeout=120) as sandbox:
        sandbox.write_file("/untrusted.sh", script)
        try:
            result = sandbox.run(["sh", "/untrusted.sh"], timeout=5)
        except ProcessTimeoutError:
            return f"{name}: killed after 5 s"
        except OutOfMemoryError:
            return f"{name}: killed for going over 64 MiB"
        return f"{name}: exit {result.returncode}: {result.stdout.decode().strip()}"


def main() -> None:
    scripts = {sys.argv[1]: Path(sys.argv[1]).read_text()} if len(sys.argv) > 1 else SCRIPTS
    for name, script in scripts.items():
        print(run_untrusted(name, script), flush=True)


if __name__ == "__main__":
    main()
