"""The `cocoon` command without VMs: argument handling, errors as runc gives them, spec output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cocoon.cli.common import parse_signal, parse_size
from cocoon.cli.events import parse_duration
from cocoon.errors import ConfigError

COCOON = [sys.executable, "-c", "from cocoon.cli.main import entry; entry()"]


def cocoon(*args: str, root: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COCOON, "--root", str(root), *args], capture_output=True, text=True,
                          input=stdin, timeout=60, check=False)


@pytest.mark.parametrize(("text", "number"), [
    ("9", 9), ("KILL", 9), ("SIGKILL", 9), ("term", 15), ("SIGUSR1", int(signal.SIGUSR1)),
    ("RTMIN+1", int(signal.SIGRTMIN) + 1)])
def test_signal_names_and_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["0", "65", "SIGNOPE", "", "-1"])
def test_bad_signals(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_signal(text)


@pytest.mark.parametrize(("text", "size"), [
    ("1048576", 1 << 20), ("512m", 512 << 20), ("1g", 1 << 30), ("64k", 64 << 10),
    ("-1", -1), ("2MB", 2 << 20)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "s", "-1s", "0s", "5x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize("verb", [
    ["state"], ["start"], ["kill"], ["delete"], ["pause"], ["resume"], ["ps"],
    ["exec", "--detach"], ["events", "--stats"], ["update", "--memory", "1g"]])
def test_unknown_container_is_one_line_and_non_zero(verb: list[str], tmp_path: Path) -> None:
    args = [*verb, "ghost"]
    if verb[0] == "exec":
        args.append("true")
    result = cocoon(*args, root=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == ["cocoon: container ghost does not exist"], result.stderr


def test_delete_force_of_unknown_container_succeeds(tmp_path: Path) -> None:
    assert cocoon("delete", "--force", "ghost", root=tmp_path).returncode == 0


def test_errors_also_go_to_the_json_log(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    result = cocoon("--log", str(log), "--log-format", "json", "state", "ghost", root=tmp_path)
    assert result.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == "container ghost does not exist"


def test_bad_bundles_fail_before_any_vm(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    result = cocoon("create", "--bundle", str(bundle), "c1", root=tmp_path / "root")
    assert result.returncode == 1 and "has no config.json" in result.stderr
    (bundle / "config.json").write_text("{not json")
    result = cocoon("create", "--bundle", str(bundle), "c1", root=tmp_path / "root")
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr and "line 1 column 2" in result.stderr
    spec = json.loads(cocoon("spec", "--bundle", str(tmp_path), root=tmp_path).stdout or "{}")
    assert spec == {}
    config = json.loads((tmp_path / "config.json").read_text())
    config["process"]["user"]["uid"] = "root"
    (bundle / "config.json").write_text(json.dumps(config))
    result = cocoon("create", "--bundle", str(bundle), "c1", root=tmp_path / "root")
    assert result.returncode == 1 and "process.user.uid" in result.stderr
    config["process"]["user"]["uid"] = 0
    (bundle / "config.json").write_text(json.dumps(config))
    result = cocoon("create", "--bundle", str(bundle), "c1", root=tmp_path / "root")
    assert result.returncode == 1 and "rootfs" in result.stderr
    assert "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # nothing was left behind: no state directory for c1
    assert not (tmp_path / "root" / "c1").exists()


def test_spec_writes_a_default_config_once(tmp_path: Path) -> None:
    assert cocoon("spec", "--bundle", str(tmp_path), root=tmp_path).returncode == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["process"]["args"] == ["sh"] and config["root"]["path"] == "rootfs"
    again = cocoon("spec", "--bundle", str(tmp_path), root=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr


def test_features_and_version(tmp_path: Path) -> None:
    features = json.loads(cocoon("features", root=tmp_path).stdout)
    assert features["linux"]["cgroup"]["v2"] is True
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    assert features["annotations"]["org.opencontainers.runc.checkpoint.enabled"] == "true"
    version = cocoon("version", root=tmp_path).stdout
    assert version.startswith("cocoon version ") and "spec: 1." in version
    assert cocoon("--version", root=tmp_path).stdout.startswith("cocoon version")


def test_list_of_an_empty_root(tmp_path: Path) -> None:
    assert json.loads(cocoon("list", "--format", "json", root=tmp_path).stdout) == []
    assert cocoon("list", "-q", root=tmp_path).stdout == ""
