#!/usr/bin/env python3
"""Regenerate the configuration reference in docs/operations.md from the settings' definitions
(between its BEGIN and END markers); tests/unit/test_cli_config.py fails when they differ."""

from __future__ import annotations

from pathlib import Path

from cocoon.config.reference import reference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
BEGIN = "<!-- BEGIN cocoon config reference -->"
END = "<!-- END cocoon config reference -->"

text = PAGE.read_text()
head, rest = text.split(BEGIN, 1)
_, tail = rest.split(END, 1)
PAGE.write_text(f"{head}{BEGIN}\n{reference().strip(chr(10))}\n{END}{tail}")
