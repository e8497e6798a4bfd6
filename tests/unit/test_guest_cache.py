"""The asset cache: where it is, atomic builds, and a lock other processes really wait on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cocoon.guest import cache


def test_default_is_var_lib_cocoon_unless_the_environment_says(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    assert cache.default_cache_dir() == Path("/var/lib/cocoon")
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "assets"))
    assert cache.default_cache_dir() == tmp_path / "assets"
    assert cache.resolve_cache_dir(None) == tmp_path / "assets"
    assert (tmp_path / "assets").is_dir()


def test_building_renames_into_place_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "images" / "abc"
    with cache.building(dest) as tmp:
        assert not dest.exists()
        (tmp / "initrd.img").write_bytes(b"x")
    assert (dest / "initrd.img").read_bytes() == b"x"
    assert dest.stat().st_mode & 0o755 == 0o755
    assert [p.name for p in dest.parent.iterdir()] == ["abc"]


def test_building_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "images" / "abc"
    with pytest.raises(RuntimeError), cache.building(dest) as tmp:
        (tmp / "half").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_building_clears_stale_temporaries(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-abc-dead"
    stale.mkdir()
    with cache.building(tmp_path / "abc"):
        pass
    assert not stale.exists()


def test_json_round_trip_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "x" / "state.json"
    cache.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert cache.read_json(path) == {"a": [1, 2], "b": 1}
    assert path.stat().st_mode & 0o777 == 0o644
    path.write_text("{not json")
    assert cache.read_json(path) is None
    assert cache.read_json(tmp_path / "missing.json") is None


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\nfrom cocoon.guest import cache\n"
         "with cache.locked(Path(sys.argv[1]), 'images'):\n"
         "    print('held', flush=True)\n    time.sleep(1.0)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with cache.locked(tmp_path, "images"):
            waited = time.monotonic() - started
        assert waited > 0.5, "the lock did not wait for the other holder"
        with cache.locked(tmp_path, "kernel"):  # another name is independent
            pass
    finally:
        holder.wait(timeout=10)
