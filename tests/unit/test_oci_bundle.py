"""Bundles: the rootfs is resolved against the bundle and must be a directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConfigError
from cocoon.oci.bundle import load_bundle
from cocoon.oci.default import default_spec


def _bundle(tmp_path: Path, root: str = "rootfs", **changes: Any) -> Path:
    config = default_spec()
    config["root"]["path"] = root
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_relative_rootfs_is_resolved_against_the_bundle(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rootfs").mkdir()
    _bundle(tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    bundle = load_bundle(tmp_path.name)  # a relative bundle path, too
    assert bundle.path == tmp_path
    assert bundle.rootfs == tmp_path / "rootfs"
    assert bundle.config_path == tmp_path / "config.json"
    assert bundle.spec.hostname == "cocoon"


def test_absolute_rootfs_is_taken_as_is(tmp_path: Path) -> None:
    elsewhere = tmp_path / "images" / "alpine"
    elsewhere.mkdir(parents=True)
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    bundle = load_bundle(_bundle(bundle_dir, root=str(elsewhere) + "/"))
    assert bundle.rootfs == elsewhere


def test_rootfs_through_a_symlink_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "rootfs")
    assert load_bundle(_bundle(tmp_path)).rootfs == tmp_path / "rootfs"


def test_missing_rootfs_names_the_path(tmp_path: Path) -> None:
    _bundle(tmp_path, root="nothere")
    with pytest.raises(ConfigError) as caught:
        load_bundle(tmp_path)
    assert str(caught.value) == (f"{tmp_path}/config.json: root.path: rootfs {tmp_path}/nothere "
                                 "does not exist")
    assert caught.value.evidence["rootfs"] == f"{tmp_path}/nothere"


def _error(directory: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_bundle(directory)
    return str(caught.value)


def test_rootfs_that_is_a_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "rootfs").write_text("")
    _bundle(tmp_path)
    assert _error(tmp_path).endswith(f"rootfs {tmp_path}/rootfs is not a directory")


def test_bundle_that_is_not_a_directory(tmp_path: Path) -> None:
    assert _error(tmp_path / "none") == f"bundle {tmp_path}/none does not exist"
    (tmp_path / "file").write_text("")
    assert _error(tmp_path / "file") == f"bundle {tmp_path}/file is not a directory"


def test_bundle_without_config(tmp_path: Path) -> None:
    assert _error(tmp_path) == f"bundle {tmp_path} has no config.json"


def test_invalid_config_is_reported_before_the_rootfs(tmp_path: Path) -> None:
    _bundle(tmp_path, hostname=7)
    with pytest.raises(ConfigError, match=r"config.json: hostname: expected a string, got 7$"):
        load_bundle(tmp_path)
