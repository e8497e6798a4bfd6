"""What the monitor derives from the settings for the QEMU it starts: the agent's log level on
the kernel command line (as COCOON_AGENT_LOG, which the guest's agent reads), TCG's buffer."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon.sandbox.layout import SandboxConfig
from cocoon.sandbox.vmstart import kernel_args, tb_size_mib


def _config(**changes: object) -> SandboxConfig:
    return SandboxConfig(sandbox_id="s", vm_dir="/tmp/x", kernel_args=("quiet",),
                         **changes)  # type: ignore[arg-type]


def test_the_agents_log_level_reaches_its_kernel_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COCOON_AGENT_LOG", raising=False)
    monkeypatch.setenv("COCOON_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text("")
    assert kernel_args(_config()) == ("quiet",)  # info, the agent's default: as before
    assert kernel_args(_config(debug=True)) == ("quiet", "COCOON_AGENT_LOG=DEBUG")
    (tmp_path / "config.toml").write_text('[agent]\nlog_level = "warning"\n')
    assert kernel_args(_config()) == ("quiet", "COCOON_AGENT_LOG=WARNING")
    monkeypatch.setenv("COCOON_AGENT_LOG", "error")  # the variable overrides the file
    assert kernel_args(_config()) == ("quiet", "COCOON_AGENT_LOG=ERROR")


def test_vm_shape_defaults_come_from_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCOON_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text(
        '[hypervisor]\nvcpus = 3\nmachine = "pc"\nimage = "/tmp/i.img"\ntcg_tb_mib = 64\n')
    config = _config()
    assert (config.vcpus, config.machine, config.initrd) == (3, "pc", "/tmp/i.img")
    assert tb_size_mib() == 64
    # a saved sandbox.json keeps the shape it was started with
    assert SandboxConfig.from_json({**config.to_json(), "vcpus": 1}).vcpus == 1
