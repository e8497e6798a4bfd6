"""Copy a project into a sandbox, run its tests there, and copy the report out.

    .venv/bin/python examples/project_tests.py [PROJECT] [REPORT_DIR]

By default the project is examples/project (a shell "calculator" with three tests) and the
report lands in ./report. The project's tests run in a VM of their own, so whatever they do
stays there; only the report comes back (checked on the way: no absolute names, no links out
of REPORT_DIR).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cocoon import Sandbox

HERE = Path(__file__).resolve().parent


def main(project: Path, report: Path) -> int:
    with Sandbox(memory_mib=128, timeout=300) as sandbox:
        sandbox.copy_in(project, "/src")
        result = sandbox.run(["sh", "-c", "cd /src && ./run_tests.sh"], timeout=120)
        sandbox.copy_out("/src/report", report)
    print((report / "summary").read_text().strip())
    print((report / "results.txt").read_text().strip())
    return result.returncode


if __name__ == "__main__":
    project = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "project"
    report = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("report")
    sys.exit(main(project, report))
