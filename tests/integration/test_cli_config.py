"""A configuration file reaches the guest: `cocoon --config FILE run` of a busybox bundle boots
a VM with the file's memory and vCPUs, seen from inside (/proc/meminfo, nproc); and a broken
file is refused before any VM starts, naming file:line:key, leaving nothing behind."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
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


def _qemu_cmdlines() -> list[list[str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"qemu-system-x86_64"):
            found.append([a.decode(errors="replace") for a in args])
    return found


@pytest.fixture
def configured_kernel(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Debian's cached kernel copied to a path of the test's, with its module tree: what a
    user names in `hypervisor.kernel`. The guest image built for it is removed at the end."""
    from cocoon.guest import assets
    from cocoon.guest.cache import read_json, resolve_cache_dir
    from cocoon.guest.kernel import CUSTOM

    cached = assets.find_kernel()
    assert cached is not None and cached.modules_dir is not None, "the suite's set-up fetches it"
    vmlinuz = tmp_path / "vmlinuz-configured"
    shutil.copyfile(cached.vmlinuz, vmlinuz)
    yield vmlinuz, cached.modules_dir, cached.release
    for image in (resolve_cache_dir(None) / "images").iterdir():
        manifest = read_json(image / "manifest.json")
        if isinstance(manifest, dict) and manifest.get("kernel", {}).get("package") == CUSTOM:
            shutil.rmtree(image, ignore_errors=True)


def test_a_configured_kernel_is_the_one_the_vm_boots(
        state_root: Path, tmp_path: Path, configured_kernel: tuple[Path, Path, str]) -> None:
    """`hypervisor.kernel` and `kernel_modules`: QEMU boots that file, with an agent image
    built for it (its modules from that tree), and the container runs."""
    vmlinuz, modules, release = configured_kernel
    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "b", ["sleep", "600"])
    config = tmp_path / "config.toml"
    config.write_text(f'[hypervisor]\nkernel = "{vmlinuz}"\nkernel_modules = "{modules}"\n\n'
                      '[templates]\nmode = "off"\n')
    cli.ok("--config", str(config), "create", "--bundle", str(bundle), "kern")
    try:
        booted = [args for args in _qemu_cmdlines() if "-kernel" in args]
        kernels = {args[args.index("-kernel") + 1] for args in booted}
        assert str(vmlinuz) in kernels, kernels
        cli.ok("--config", str(config), "start", "kern")
        assert cli.ok("exec", "kern", "uname", "-r").strip() == release
    finally:
        cli("delete", "--force", "kern")


def test_modules_of_another_kernel_are_refused_before_any_vm(
        state_root: Path, tmp_path: Path, vm_root: Path,
        configured_kernel: tuple[Path, Path, str]) -> None:
    vmlinuz, _, release = configured_kernel
    other = tmp_path / "lib" / "modules" / "6.1.0-1-other-amd64"
    other.mkdir(parents=True)
    (other / "modules.dep").write_text("")
    cli = Cli(state_root)
    bundle = make_bundle(tmp_path / "b", ["true"])
    config = tmp_path / "config.toml"
    config.write_text(f'[hypervisor]\nkernel = "{vmlinuz}"\nkernel_modules = "{other}"\n')
    result = cli("--config", str(config), "run", "--bundle", str(bundle), "kern-bad")
    assert result.returncode == 1
    assert result.stderr == (
        f"cocoon: hypervisor.kernel_modules: {other} holds modules of 6.1.0-1-other-amd64, "
        f"not of the kernel's release {release}\n")
    assert not any(vm_root.iterdir())
    assert not any(state_root.iterdir())
