"""`cocoon install/uninstall containerd` on configuration files: merge, idempotence, round trip."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from cocoon.errors import InstallError
from cocoon.install import containerd
from cocoon.install.containerd import install, uninstall

V2 = """version = 2
# the operator's own comment
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"   # kept
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"""


def handlers(path: Path, *keys: str) -> dict[str, object]:
    node: dict[str, object] = tomllib.loads(path.read_text())
    for key in keys:
        node = node[key]  # type: ignore[assignment]
    return node


def cri_v2(path: Path) -> dict[str, object]:
    return handlers(path, "plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes")


def test_install_then_uninstall_leaves_the_file_byte_for_byte(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(V2)
    os.chmod(config, 0o600)
    first = install(config, bin_dir=None, cocoon_config=Path("/etc/cocoon/config.toml"))
    assert first.changed and "restart containerd" in first.message
    cocoon = cri_v2(config)["cocoon"]
    assert cocoon == {"runtime_type": "io.containerd.cocoon.v2",
                      "privileged_without_host_devices": True,
                      "options": {"ConfigPath": "/etc/cocoon/config.toml"}}
    assert cri_v2(config)["runc"] == {"runtime_type": "io.containerd.runc.v2"}
    text = config.read_text()
    assert "# the operator's own comment" in text and "# kept" in text
    assert config.with_name("config.toml.cocoon-backup").read_text() == V2
    assert (config.stat().st_mode & 0o777) == 0o600
    # idempotent: a second install writes nothing
    again = install(config, bin_dir=None, cocoon_config=Path("/etc/cocoon/config.toml"))
    assert not again.changed and config.read_text() == text
    removed = uninstall(config, bin_dir=None)
    assert removed.changed
    assert config.read_text() == V2
    assert not config.with_name("config.toml.cocoon-backup").exists()
    assert not uninstall(config, bin_dir=None).changed


def test_a_config_without_runtimes_or_a_file_at_all(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n")
    install(config, bin_dir=None)
    assert cri_v2(config)["cocoon"]["runtime_type"] == "io.containerd.cocoon.v2"  # type: ignore[index]
    uninstall(config, bin_dir=None)
    assert config.read_text() == "version = 2\n"
    missing = tmp_path / "etc" / "containerd" / "config.toml"
    install(missing, bin_dir=None)
    assert "cocoon" in cri_v2(missing)
    uninstall(missing, bin_dir=None)
    assert "cocoon" not in str(tomllib.loads(missing.read_text()))


def test_version_1_and_3_layouts(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.toml"
    v1.write_text("[plugins.cri]\n  stream_server_port = \"0\"\n")
    install(v1, bin_dir=None)
    assert handlers(v1, "plugins", "cri", "containerd", "runtimes", "cocoon")
    v3 = tmp_path / "v3.toml"
    v3.write_text("version = 3\n")
    install(v3, bin_dir=None)
    assert handlers(v3, "plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes",
                    "cocoon")


@pytest.mark.parametrize(("text", "needle"), [
    ("version = 2\n[plugins\n", ":2:"),                       # broken TOML: file:line:col
    ("version = 9\n", "version = 9"),
    ("version = 2\nplugins = 3\n", "plugins is not a table (int)"),
    ("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cocoon]\n"
     "runtime_type = \"io.containerd.kata.v2\"\n", "not written by cocoon install"),
])
def test_configs_it_cannot_merge_are_refused_by_name(tmp_path: Path, text: str,
                                                     needle: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(InstallError) as err:
        install(config, bin_dir=None)
    assert needle in str(err.value) and str(config) in str(err.value)
    assert config.read_text() == text  # untouched
    assert not config.with_name("config.toml.cocoon-backup").exists()


def test_force_replaces_a_foreign_handler_and_uninstall_refuses_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    foreign = ("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cocoon]\n"
               "runtime_type = \"io.containerd.kata.v2\"\n")
    config.write_text(foreign)
    with pytest.raises(InstallError):
        uninstall(config, bin_dir=None)
    install(config, bin_dir=None, force=True)
    assert cri_v2(config)["cocoon"]["runtime_type"] == "io.containerd.cocoon.v2"  # type: ignore[index]
    uninstall(config, bin_dir=None)
    assert config.read_text() == foreign  # the backup is what was there before


def test_the_shim_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim = tmp_path / "venv" / "containerd-shim-cocoon-v2"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\n")
    monkeypatch.setattr(containerd, "shim_binary", lambda: shim)
    bin_dir = tmp_path / "bin"
    config = tmp_path / "config.toml"
    outcome = install(config, bin_dir=bin_dir)
    link = bin_dir / "containerd-shim-cocoon-v2"
    assert link.is_symlink() and link.resolve() == shim and "linked" in outcome.message
    install(config, bin_dir=bin_dir)  # the same link again is fine
    uninstall(config, bin_dir=bin_dir)
    assert not link.exists() and not link.is_symlink()
    link.write_text("someone else's")
    with pytest.raises(InstallError, match="not a link"):
        install(config, bin_dir=bin_dir)
    uninstall(config, bin_dir=bin_dir)
    assert link.read_text() == "someone else's"  # not ours: left alone
