"""containerd's stdio fifos opened for the relay (real fifos)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cocoon.errors import ConfigError
from cocoon.shim.stdio import StdioPaths, open_stdio


def test_output_fifo_opens_without_a_reader_and_ends_at_close(tmp_path: Path) -> None:
    out = tmp_path / "out"
    os.mkfifo(out)
    opened = open_stdio(StdioPaths(stdout=str(out)))
    assert opened.stdout is not None
    os.write(opened.stdout, b"kept while nobody reads\n")
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(reader, 100) == b"kept while nobody reads\n"
        opened.close()
        opened.close()  # idempotent
        assert os.read(reader, 100) == b""  # our descriptor was the only writer
    finally:
        os.close(reader)


def test_stdin_and_shared_stderr(tmp_path: Path) -> None:
    stdin, out = tmp_path / "in", tmp_path / "out"
    os.mkfifo(stdin)
    os.mkfifo(out)
    opened = open_stdio(StdioPaths(stdin=str(stdin), stdout=str(out), stderr=str(out)))
    try:
        assert opened.stdin is not None and opened.stderr == opened.stdout
        relay = opened.relay_stdio()  # stdin has its own pump
        assert (relay.stdin, relay.stdout, relay.stderr) == (None, opened.stdout, opened.stderr)
    finally:
        opened.close()


def test_terminal_has_no_stderr_and_files_are_appended(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("old\n")
    opened = open_stdio(StdioPaths(stdout=f"file://{log}", stderr=f"file://{log}",
                                   terminal=True))
    try:
        assert opened.stderr is None and opened.relay_stdio().terminal
        assert opened.stdout is not None
        os.write(opened.stdout, b"new\n")
    finally:
        opened.close()
    assert log.read_text() == "old\nnew\n"


def test_unsupported_or_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="binary:// scheme"):
        open_stdio(StdioPaths(stdout="binary:///usr/bin/logger"))
    with pytest.raises(ConfigError, match="stdin"):
        open_stdio(StdioPaths(stdin=str(tmp_path / "missing")))
