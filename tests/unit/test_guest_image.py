"""Guest image bookkeeping without building: the init script, and pruning unused images."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cocoon.guest import image
from cocoon.guest.inputs import Sources


def _image_dir(cache: Path, name: str, last_use: float) -> Path:
    d = cache / "images" / name
    d.mkdir(parents=True)
    (d / "initrd.img").write_bytes(b"x")
    (d / "manifest.json").write_text("{}")
    os.utime(d / "manifest.json", (last_use, last_use))
    return d


def test_prune_removes_only_images_unused_long_enough(tmp_path: Path) -> None:
    now = time.time()
    old = _image_dir(tmp_path, "old", now - 7200)
    recent = _image_dir(tmp_path, "recent", now - 60)
    kept = _image_dir(tmp_path, "kept", now - 7200)
    building = tmp_path / "images" / ".tmp-new-123"
    building.mkdir()
    assert image.prune_unused(tmp_path, keep=kept, unused_for=3600) == ["old"]
    assert not old.exists() and recent.exists() and kept.exists() and building.exists()


def test_init_runs_the_agent_isolated_and_powers_off() -> None:
    text = image.AGENT_INIT.decode()
    first, _, body = text.partition("\n")
    assert first == "#!/usr/bin/python3.11 -ISB"
    assert "/usr/lib/cocoon" in body and "/usr/lib/python3/dist-packages" in body
    assert "from cocoon.agent.main import main" in body
    assert '["poweroff", "-f"]' in body
    compile(body, "init", "exec")  # valid Python


def test_agent_entry_point_is_smoke_tested_only_for_the_agent_image() -> None:
    sources = Sources.installed()
    has_agent = "cocoon/agent/main.py" in sources.agent_files()
    smoke = image._smoke_imports(image.AGENT_INIT, sources)
    assert ("cocoon.agent.main" in smoke) == has_agent
    assert ("cocoon.agent.service" in smoke) == has_agent  # it imports what the agent runs
    assert image._smoke_imports(b"#!/probe\n", sources) == image.SMOKE_IMPORTS
