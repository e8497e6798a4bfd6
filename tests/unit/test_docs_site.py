"""The documentation site builds strictly (`mkdocs build --strict`): a broken link, a page left
out of the nav, a docstring mkdocstrings cannot parse, or a public name of the Python API
without a docstring fails the build."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")
HOOK = REPO / "docs" / "hooks" / "docstrings.py"


def build(site: Path, config: Path = REPO / "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MKDOCS), "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))


def test_the_site_builds_strictly_with_the_api_reference(tmp_path: Path) -> None:
    done = build(tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("AsyncSandbox", "copy_out", "OutOfMemoryError", "check_returncode"):
        assert name in api, name
    start = (tmp_path / "site" / "getting-started" / "index.html").read_text()
    assert "./scripts/demo.sh" in start and "./scripts/test.sh" in start
    assert (tmp_path / "site" / "img" / "start.png").exists()  # the benchmark plots


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    config = tmp_path / "mkdocs.yml"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [nowhere](nowhere.md).\n")
    config.write_text("site_name: t\ndocs_dir: docs\n")
    done = build(tmp_path / "site", config)
    assert done.returncode != 0 and "nowhere.md" in done.stderr


def test_the_hook_names_a_public_member_without_a_docstring() -> None:
    spec = importlib.util.spec_from_file_location("docstrings_hook", HOOK)
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    module = types.ModuleType("fake_api", "A module.")

    class Documented:
        """A class."""

        def fine(self) -> None:
            """Documented."""

        def bare(self) -> None:
            pass

    Documented.__module__ = "fake_api"
    module.__all__ = ["Documented"]  # type: ignore[attr-defined]
    module.Documented = Documented  # type: ignore[attr-defined]
    sys.modules["fake_api"] = module
    try:
        assert hook._missing("fake_api") == ["fake_api.Documented.bare"]
        assert hook._missing("cocoon.api") == []
    finally:
        del sys.modules["fake_api"]
