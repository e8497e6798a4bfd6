"""The shim's log to containerd's `log` fifo: delivered when read, else dropped, never blocking."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from cocoon.shim import logfifo
from cocoon.shim.logfifo import FifoHandler


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"cocoon.test.logfifo.{time.monotonic_ns()}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def test_records_reach_a_reader_and_are_dropped_without_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfifo, "REOPEN_INTERVAL", 0.0)
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    handler = FifoHandler(fifo)
    logger = _logger(handler)
    logger.info("nobody listens")  # no reader: dropped, and no exception
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        logger.info("containerd reads this")
        assert os.read(reader, 1000) == b"containerd reads this\n"
    finally:
        os.close(reader)
    logger.info("the reader left")  # EPIPE: dropped, reopened later
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        logger.info("back again")
        assert os.read(reader, 1000) == b"back again\n"
    finally:
        os.close(reader)
        handler.close()


def test_a_full_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    handler = FifoHandler(fifo)
    logger = _logger(handler)
    try:
        started = time.monotonic()
        for _ in range(5000):
            logger.info("x" * 100)
        assert time.monotonic() - started < 5.0
    finally:
        handler.close()
        os.close(reader)
