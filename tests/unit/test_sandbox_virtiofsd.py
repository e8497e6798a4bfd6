"""virtiofsd's command line and its tuning knobs ([share] of the config file, the environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon.errors import SettingsError
from cocoon.sandbox.virtiofsd import Tuning, command


def test_the_default_is_virtiofsds_own_auto_cache_without_a_pool() -> None:
    argv = command(3, Path("/srv/share"))
    assert "cache=auto" in argv and "source=/srv/share" in argv and "--fd=3" in argv
    assert not any(a.startswith("--thread-pool-size") for a in argv)
    assert "writeback" not in argv


def test_knobs_from_the_environment_reach_the_command_line() -> None:
    tuning = Tuning.from_env({"COCOON_VIRTIOFS_CACHE": "always", "COCOON_VIRTIOFS_THREADS": "4",
                              "COCOON_VIRTIOFS_WRITEBACK": "1"})
    argv = command(3, Path("/srv/share"), tuning=tuning)
    assert "cache=always" in argv and "--thread-pool-size=4" in argv and "writeback" in argv


@pytest.mark.parametrize("env", [{"COCOON_VIRTIOFS_CACHE": "sometimes"},
                                 {"COCOON_VIRTIOFS_THREADS": "-1"},
                                 {"COCOON_VIRTIOFS_THREADS": "1000"},
                                 {"COCOON_VIRTIOFS_WRITEBACK": "yes"}])
def test_a_bad_knob_is_refused_by_name(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as err:
        Tuning.from_env(env)
    assert next(iter(env)) in str(err.value)
