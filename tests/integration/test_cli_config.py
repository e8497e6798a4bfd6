"""A configuration file reaches the guest: `cocoon --config FILE run` of a busybox bundle boots
a VM with the file's memory and vCPUs, seen from inside (/proc/meminfo, nproc); and a broken
file is refused before any VM starts, naming file:line:key, leaving nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.framework.cli import Cli
from tests.integration.test_cli_lifecycle import make_bundle

pytestmark = pytest.mark.integration

REPORT = "echo cpus=$(nproc); grep MemTotal /proc/meminfo"


def _guest(cli: Cli, config: Path, bundle: Path, cid: str) -> tuple[int, int]:
    """nproc and MemTotal (MiB) as the container sees them."""
    result = cli("--config", str(config), "run", "--bundle", str(bundle), cid)
    assert result.returncode == 0, result.stderr
    cpus = re.search(r"cpus=(\d+)", result.stdout)
    mem = re.search(r"MemTotal:\s+(\d+) kB", result.stdout)
    assert cpus and mem, result.stdout
    return int(cpus.group(1)), int(mem.group(1)) >> 10


def test_memory_and_vcpus_from_the_file_are_seen_in_the_guest(state_root: Path,
                                                               tmp_path: Path) -> None:
    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", REPORT])
    # templates off: a VM of this shape is booted cold, no template is left in the cache
    config = tmp_path / "config.toml"
    config.write_text("[hypervisor]\nmemory_mib = 512\nvcpus = 2\n\n"
                      '[templates]\nmode = "off"\n')
    cpus, mem = _guest(cli, config, bundle, "cfg-big")
    assert cpus == 2
    assert 400 < mem <= 512, f"MemTotal {mem} MiB for a 512 MiB VM"
    config.write_text("[hypervisor]\nmemory_mib = 192\nvcpus = 1\n\n"
                      '[templates]\nmode = "off"\n')
    cpus, mem = _guest(cli, config, bundle, "cfg-small")
    assert cpus == 1
    assert 120 < mem <= 192, f"MemTotal {mem} MiB for a 192 MiB VM"


def test_a_broken_file_starts_no_vm(state_root: Path, tmp_path: Path, vm_root: Path) -> None:
    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "b", ["true"])
    config = tmp_path / "config.toml"
    config.write_text("[hypervisor]\nvcpus = 2\nmemory_mib = 16\n")
    result = cli("--config", str(config), "run", "--bundle", str(bundle), "cfg-bad")
    assert (result.returncode, result.stderr) == (
        1, f"cocoon: {config}:3: hypervisor.memory_mib: must be an integer from 64 to "
           "1048576, not 16\n")
    assert not any(vm_root.iterdir())
    assert not any(state_root.iterdir())
