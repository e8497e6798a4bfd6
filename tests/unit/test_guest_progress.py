"""Progress reporting: numbered phases reach the listener, and the CLI renders them with timings."""

from __future__ import annotations

import io
import re

from cocoon.cli.assets import PhasePrinter
from cocoon.guest.progress import Steps


def test_steps_number_phases_and_report_cached() -> None:
    seen: list[tuple[str, int, int]] = []
    steps = Steps(lambda phase, i, n: seen.append((phase, i, n)), "kernel", 3)
    steps("resolve")
    steps("download")
    steps.cached()
    assert seen == [("kernel: resolve", 1, 3), ("kernel: download", 2, 3),
                    ("kernel: cached", 3, 3)]


def test_steps_without_listener_do_nothing_visible() -> None:
    steps = Steps(None, "floor initrd", 1)
    steps("a")
    steps("b")  # more steps than announced must not break a build


def test_phase_printer_prints_one_line_per_phase_with_timing() -> None:
    out = io.StringIO()
    printer = PhasePrinter(out)
    printer("kernel: resolve", 1, 2)
    printer("kernel: download", 2, 2)
    printer.close()
    printer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[1/2\] kernel: resolve  \d+\.\d\ds", lines[0])
    assert lines[1].startswith("[2/2] kernel: download")
