"""How builders report progress without knowing who listens (the CLI renders it on stderr)."""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger("cocoon.guest.progress")


class Progress(Protocol):
    """Called when step `step` (1-based) of `total` of a build starts; `phase` names it.

    Phases read "<asset>: <what>", e.g. "kernel: download". A listener that times phases ends
    one when the next begins, and the last one when the call that reported it returns.
    """

    def __call__(self, phase: str, step: int, total: int) -> None: ...


class Steps:
    """Numbers the steps of one asset's build and forwards them to an optional listener."""

    def __init__(self, progress: Progress | None, asset: str, total: int) -> None:
        self._progress = progress
        self._asset = asset
        self._total = total
        self._step = 0

    def __call__(self, what: str) -> None:
        self._step += 1
        self._report(f"{self._asset}: {what}", min(self._step, self._total))

    def cached(self) -> None:
        """The asset was found current in the cache: the remaining steps are skipped."""
        self._report(f"{self._asset}: cached", self._total)

    def _report(self, phase: str, step: int) -> None:
        logger.info("[%d/%d] %s", step, self._total, phase)
        if self._progress is not None:
            self._progress(phase, step, self._total)
