"""The configuration file: loading, precedence (env > file > default), and every error form
naming the file, line and key. Real files in a temporary directory; no mock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cocoon.config import schema
from cocoon.config.loader import DEFAULT_PATH, ENV_CONFIG, current, load, locate, summary
from cocoon.errors import SettingsError
from cocoon.hypervisor.config import DEFAULT_TB_SIZE_MIB, MACHINES
from cocoon.sandbox.virtiofsd import CACHE_MODES

GOOD = """\
# Cocoon on a test host
[hypervisor]
memory_mib = 512   # bigger guests
vcpus = 2
accel = "tcg"

[templates]
mode = "off"
memory_mib = [256, 512]

[runtime]
vm_dir = "/tmp/cocoon-test-vm"

[share]
writeback = true
"""


def _file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {ENV_CONFIG: str(path)}


def _error(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(SettingsError) as info:
        load({**_file(tmp_path, text), **env})
    return str(info.value)


def test_without_a_file_every_setting_is_its_default() -> None:
    if DEFAULT_PATH.exists():
        pytest.skip(f"{DEFAULT_PATH} exists on this host")
    settings = load({})
    assert settings.path is None
    for definition in schema.definitions():
        assert settings.value(definition.name) == definition.default
        assert settings.source(definition.name) == "default"
    assert settings.hypervisor.memory_mib == 256
    assert settings.runtime.state_root == Path("/run/cocoon")


def test_a_file_sets_typed_values_and_says_where(tmp_path: Path) -> None:
    env = _file(tmp_path, GOOD)
    settings = load(env)
    path = env[ENV_CONFIG]
    assert settings.path == Path(path)
    assert (settings.hypervisor.memory_mib, settings.hypervisor.vcpus) == (512, 2)
    assert settings.hypervisor.accel == "tcg"
    assert settings.templates.memory_mib == (256, 512)
    assert settings.runtime.vm_dir == Path("/tmp/cocoon-test-vm")
    assert settings.share.writeback is True
    assert settings.source("hypervisor.memory_mib") == f"{path}:3"
    assert settings.source("hypervisor.vcpus") == f"{path}:4"
    assert settings.source("share.writeback") == f"{path}:15"
    assert settings.source("pool.size") == "default"
    assert summary(settings, env) == f"{path}: valid; 7 setting(s) from it"


def test_the_environment_overrides_the_file_which_overrides_the_default(tmp_path: Path) -> None:
    env = {**_file(tmp_path, GOOD), "COCOON_VM_MEMORY_MIB": "1024", "COCOON_POOL_SIZE": "2",
           "COCOON_TEMPLATES": "1", "COCOON_VM_DIR": "relative/vm", "COCOON_TEMPLATE_MEMORY": ""}
    settings = load(env)
    assert settings.hypervisor.memory_mib == 1024  # env over file
    assert settings.source("hypervisor.memory_mib") == "env COCOON_VM_MEMORY_MIB"
    assert settings.hypervisor.vcpus == 2  # file over default
    assert settings.pool.size == 2  # env over default
    assert settings.templates.mode == "on"  # the variable's old aliases still work
    assert settings.runtime.vm_dir == Path.cwd() / "relative/vm"  # as before: made absolute
    assert settings.templates.memory_mib == (256, 512)  # an empty variable is no override
    # vm_dir and memory_mib are in the file too: the environment's win
    assert summary(settings, env).endswith("4 setting(s) from it, 4 from the environment")


def test_dotted_keys_and_inline_tables_count_too(tmp_path: Path) -> None:
    env = _file(tmp_path, 'pool.size = 3\nagent = { log_level = "debug" }\n')
    settings = load(env)
    assert settings.pool.size == 3
    assert settings.agent.log_level == "debug"
    assert settings.source("pool.size").endswith(":1")
    assert settings.source("agent.log_level").endswith(":2")


def test_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "[hypervisor]\nmemory_mib = 512\nvcpus 2\n")
    assert message.startswith(f"{tmp_path}/config.toml:3: not valid TOML: ")
    assert "(column" in message


def test_a_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    message = _error(tmp_path, '[hypervisor]\n\nmemory_mib = "1G"\n')
    assert message == (f"{tmp_path}/config.toml:3: hypervisor.memory_mib: must be an integer "
                       "from 64 to 1048576, not '1G'")
    message = _error(tmp_path, "[share]\nwriteback = 1\n")
    assert message == f"{tmp_path}/config.toml:2: share.writeback: must be true or false, not 1"
    message = _error(tmp_path, '[runtime]\nvm_dir = "run/vm"\n')
    assert message.endswith("runtime.vm_dir: must be an absolute path, not 'run/vm'")


def test_out_of_range_and_unknown_words_are_refused(tmp_path: Path) -> None:
    assert _error(tmp_path, "[hypervisor]\nvcpus = 0\n") == (
        f"{tmp_path}/config.toml:2: hypervisor.vcpus: must be an integer from 1 to 64, not 0")
    assert _error(tmp_path, "[pool]\nsize = -1\n").endswith(
        "pool.size: must be an integer from 0 to 64, not -1")
    assert _error(tmp_path, '[templates]\nmode = "sometimes"\n').endswith(
        "templates.mode: must be one of auto, on, off, not 'sometimes'")
    assert _error(tmp_path, "[templates]\nmemory_mib = [256, 8]\n").endswith(
        "templates.memory_mib: must be a list of integers from 64 to 1048576, not [256, 8]")


def test_an_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    message = _error(tmp_path, "[hypervisor]\nvcpus = 2\nmemroy_mib = 512\n")
    assert message == (f"{tmp_path}/config.toml:3: hypervisor.memroy_mib: unknown setting "
                       "(did you mean memory_mib?)")


def test_an_unknown_section_is_an_error(tmp_path: Path) -> None:
    message = _error(tmp_path, "[hypervisor]\nvcpus = 2\n\n[hypervisr]\nvcpus = 1\n")
    assert message == (f"{tmp_path}/config.toml:4: hypervisr: unknown section "
                       "(did you mean hypervisor?)")
    message = _error(tmp_path, "[security]\nseccomp = false\n")
    assert message.startswith(f"{tmp_path}/config.toml:1: security: unknown section (known: ")


def test_a_section_must_be_a_table(tmp_path: Path) -> None:
    assert _error(tmp_path, "pool = 3\n") == (
        f"{tmp_path}/config.toml:1: pool: must be a table ([pool])")


def test_a_missing_file_named_by_cocoon_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load({ENV_CONFIG: str(tmp_path / "nope.toml")})
    assert str(info.value) == (f"{tmp_path}/nope.toml: no such configuration file (named by "
                               "COCOON_CONFIG or --config)")


def test_a_bad_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load({"COCOON_VIRTIOFS_THREADS": "lots"})
    assert str(info.value) == ("COCOON_VIRTIOFS_THREADS: must be an integer from 0 to 64, "
                               "not 'lots'")
    with pytest.raises(SettingsError, match="COCOON_VIRTIOFS_WRITEBACK: must be 0 or 1"):
        load({"COCOON_VIRTIOFS_WRITEBACK": "yes"})


def test_current_follows_the_environment_and_the_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    env = _file(tmp_path, "[hypervisor]\nvcpus = 2\n")
    monkeypatch.setenv(ENV_CONFIG, env[ENV_CONFIG])
    assert current().hypervisor.vcpus == 2
    assert current() is current()  # read once while nothing changes
    (tmp_path / "config.toml").write_text("[hypervisor]\nvcpus = 3  # now three\n")
    assert current().hypervisor.vcpus == 3
    monkeypatch.setenv("COCOON_VM_MEMORY_MIB", "384")
    assert current().hypervisor.memory_mib == 384


def test_locate_finds_keys_under_headers_and_dotted() -> None:
    text = "# c\n[pool]\nsize = 1\n\n[agent]\n  log_level = 'x'\nruntime.vm_dir = 1\n"
    assert locate(text, "pool", "size") == 3
    assert locate(text, "agent", "log_level") == 6
    assert locate(text, "agent") == 5
    assert locate(text, "agent", "missing") == 5  # the section's header at least


def test_definitions_agree_with_the_code_they_configure() -> None:
    """The schema does not import the modules it configures (the CLI's `state` reads it):
    their constants must say the same."""
    fields = {f.name: f for f in dataclasses.fields(schema.Hypervisor)}
    assert fields["tcg_tb_mib"].default == DEFAULT_TB_SIZE_MIB
    assert fields["machine"].metadata["setting"].kind.choices == MACHINES
    share = {f.name: f for f in dataclasses.fields(schema.Share)}
    assert share["cache"].metadata["setting"].kind.choices == CACHE_MODES


def test_every_variable_is_a_setting_once() -> None:
    variables = [d.meta.env for d in schema.definitions() if d.meta.env]
    assert len(variables) == len(set(variables))
    assert all(v.startswith("COCOON_") for v in variables)


def test_every_variable_the_host_reads_is_defined_here() -> None:
    """No COCOON_* variable is read outside the definitions (the guest's agent reads
    COCOON_AGENT_LOG from its kernel command line, which agent.log_level fills)."""
    import re

    import cocoon

    defined = {d.meta.env for d in schema.definitions() if d.meta.env} | {ENV_CONFIG}
    source = Path(cocoon.__file__).parent
    named = set()
    for path in source.rglob("*.py"):
        named |= set(re.findall(r'"(COCOON_[A-Z0-9_]+)', path.read_text()))
    assert named <= defined, f"variables outside cocoon.config.schema: {named - defined}"
    reads = re.compile(r"os\.environ(?:\.get)?\(?\[?\s*\"COCOON_|getenv\(\s*\"COCOON_")
    readers = [str(p.relative_to(source)) for p in source.rglob("*.py")
               if reads.search(p.read_text())]
    assert readers == ["agent/main.py"], readers
