"""The configuration through the CLI (real `cocoon` processes, no VM): `--config`, `cocoon env`
with each setting's origin, `cocoon check --config-only`, a broken file failing every verb in
one line, and docs/operations.md holding the generated reference."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cocoon.config import schema
from cocoon.config.reference import example, reference
from tests.unit.test_guest_custom_kernel import RELEASE, fake_bzimage

COCOON = [sys.executable, "-c", "from cocoon.cli.main import entry; entry()"]
PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
BEGIN, END = "<!-- BEGIN cocoon config reference -->", "<!-- END cocoon config reference -->"


def cocoon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COCOON_")}
    return subprocess.run([*COCOON, *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**clean, **(env or {})})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_env_shows_each_setting_and_where_it_came_from(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[hypervisor]\nvcpus = 2\n\n[runtime]\nstate_root = "{tmp_path}"\n')
    result = cocoon("--config", str(path), "env", env={"COCOON_POOL_SIZE": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"  state_root = {tmp_path}" in lines  # [paths] follows the file
    config = lines[lines.index("[config]"):]
    assert config[1] == f"  file = {path}"
    rows = {line.split("#")[0].strip(): line.split("#")[1].strip() for line in config[2:]}
    assert rows["hypervisor.vcpus = 2"] == f"{path}:2"
    assert rows[f'runtime.state_root = "{tmp_path}"'] == f"{path}:5"
    assert rows["pool.size = 1"] == "env COCOON_POOL_SIZE"
    assert rows["hypervisor.memory_mib = 256"] == "default"
    data = json.loads(cocoon("--config", str(path), "env", "--json").stdout)
    assert data["config"]["settings"]["hypervisor.vcpus"] == {"value": "2",
                                                              "source": f"{path}:2"}


def test_env_shows_the_kernel_the_vms_boot(tmp_path: Path) -> None:
    """With `hypervisor.kernel`, [guest] is that kernel (the acceleration probe's stays
    Debian's); one that does not fit is shown as the reason."""
    vmlinuz = fake_bzimage(tmp_path / "vmlinuz")
    path = _write(tmp_path, f'[hypervisor]\nkernel = "{vmlinuz}"\n')
    data = json.loads(cocoon("--config", str(path), "env", "--json").stdout)
    assert (data["guest"]["kernel"], data["guest"]["kernel_file"]) == (RELEASE, str(vmlinuz))
    assert data["guest"]["kernel_package"].startswith("sha256:")
    path.write_text(f'[hypervisor]\nkernel = "{tmp_path}/gone"\n')
    data = json.loads(cocoon("--config", str(path), "env", "--json").stdout)
    assert data["guest"]["kernel"] == f"hypervisor.kernel: {tmp_path}/gone is not a file"


def test_check_validates_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[pool]\nsize = 2\nmemory_mib = 4096\n")
    result = cocoon("check", "--config-only", env={"COCOON_CONFIG": str(path)})
    assert (result.returncode, result.stdout) == (
        0, f"config  ok  {path}: valid; 2 setting(s) from it\n")
    path.write_text("[pool]\nsize = 2\n\n[hypervisor]\nmemroy_mib = 512\n")
    result = cocoon("check", "--config-only", env={"COCOON_CONFIG": str(path)})
    assert (result.returncode, result.stdout) == (
        1, f"config  fail  {path}:5: hypervisor.memroy_mib: unknown setting "
           "(did you mean memory_mib?)\n")
    # the full check stops at the file: the host checks read it too
    result = cocoon("--config", str(path), "check")
    assert result.returncode == 1
    assert result.stdout.startswith(f"config  fail  {path}:5: hypervisor.memroy_mib")
    assert "qemu" not in result.stdout


def test_a_broken_file_fails_every_verb_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[runtime]\nstate_root = "relative"\n')
    for verb in (["list"], ["state", "x"], ["env"]):
        result = cocoon("--config", str(path), *verb)
        assert result.returncode == 1
        assert result.stderr == (f"cocoon: {path}:2: runtime.state_root: must be an absolute "
                                 "path, not 'relative'\n")
    missing = tmp_path / "missing.toml"
    result = cocoon("list", env={"COCOON_CONFIG": str(missing)})
    assert (result.returncode, result.stderr) == (
        1, f"cocoon: {missing}: no such configuration file (named by COCOON_CONFIG or "
           "--config)\n")


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[runtime]\nstate_root = "{tmp_path / "a"}"\nlog_format = "json"\n')
    shown = cocoon("--config", str(path), "env").stdout
    assert f"  state_root = {tmp_path / 'a'}" in shown.splitlines()
    shown = cocoon("--config", str(path), "--root", str(tmp_path / "b"), "env").stdout
    assert f"  state_root = {tmp_path / 'b'}" in shown.splitlines()
    # runtime.log_format = json: the error of a verb that logs goes out as JSON to --log
    log = tmp_path / "log.json"
    result = cocoon("--config", str(path), "--log", str(log), "kill", "nope")
    assert result.returncode == 1
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"


def test_the_example_is_a_valid_file_of_defaults(tmp_path: Path) -> None:
    text = example()
    path = _write(tmp_path, re.sub(r"(?m)^#(\w+ = )", r"\1", text))  # every setting set
    result = cocoon("check", "--config-only", env={"COCOON_CONFIG": str(path)})
    assert result.returncode == 0, result.stdout
    every = len(list(schema.definitions()))
    assert result.stdout.endswith(f"valid; {every} setting(s) from it\n")
    assert cocoon("config", "example").stdout == text


def test_operations_page_holds_the_generated_reference() -> None:
    page = PAGE.read_text()
    assert BEGIN in page and END in page
    shown = page.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")
    assert shown == reference().strip("\n"), (
        "docs/operations.md differs from `cocoon config reference`: regenerate it")
    assert cocoon("config", "reference").stdout == reference()


def test_the_pages_example_is_valid(tmp_path: Path) -> None:
    page = PAGE.read_text()
    block = page.split("### Example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = _write(tmp_path, block)
    result = cocoon("check", "--config-only", env={"COCOON_CONFIG": str(path)})
    assert result.returncode == 0, result.stdout
