"""What QEMU's own root holds, from its VM config: the guest's files read-only, the files it
writes and the directories of its sockets writable, each once, nothing of the sandbox beside
them."""

from __future__ import annotations

from pathlib import Path

from cocoon.hypervisor.config import MemoryBackend, VirtioFsShare, VMConfig
from cocoon.hypervisor.jail import Bind, creation_dirs, plan


def make(**overrides: object) -> VMConfig:
    fields: dict[str, object] = {
        "name": "vm-1", "kernel": Path("/cache/vmlinuz"), "initrd": Path("/cache/initrd"),
        "qmp_socket": Path("/run/cocoon-vm/ab/vm/qmp.sock"),
        "agent_socket": Path("/run/cocoon-vm/ab/vm/agent.sock"),
        "console_log": Path("/run/cocoon-vm/ab/vm/console.log"),
    }
    fields.update(overrides)
    return VMConfig(**fields)  # type: ignore[arg-type]


def test_a_cold_vm_sees_its_guest_files_and_its_own_directory() -> None:
    assert plan(make()) == (
        Bind("/cache/vmlinuz", directory=False), Bind("/cache/initrd", directory=False),
        Bind("/usr/share/qemu/qboot.rom", directory=False),
        Bind("/run/cocoon-vm/ab/vm", writable=True))


def test_a_template_build_gets_its_files_not_their_directory() -> None:
    """QEMU writes a template's RAM file and console log by name: both are made before it
    starts and handed over, so it needs no right to the template's directory."""
    build = plan(make(memory_backend=MemoryBackend("file", Path("/cache/tmp-t/ram")),
                      console_log=Path("/cache/tmp-t/console.log")))
    assert [b for b in build if b.path.startswith("/cache/tmp-t")] == [
        Bind("/cache/tmp-t/ram", writable=True, directory=False),
        Bind("/cache/tmp-t/console.log", writable=True, directory=False)]
    assert not [b for b in plan(make(memory_backend=MemoryBackend("fd", fd=5)))
                if "proc" in b.path]


def test_qemu_creates_files_only_in_the_directories_of_its_sockets_and_pidfile() -> None:
    assert creation_dirs(make(qmp_socket=Path("/w/qmp.sock"), agent_socket=Path("/w/a.sock"),
                              pidfile=Path("/p/qemu.pid"))) == (Path("/w"), Path("/p"))
    assert creation_dirs(make()) == (Path("/run/cocoon-vm/ab/vm"),)


def test_virtiofsds_socket_directory_and_nothing_of_the_sandbox_beside() -> None:
    binds = plan(make(memory_backend=MemoryBackend("memfd"),
                      shares=(VirtioFsShare("cocoon", Path("/run/cocoon-vm/ab/vm/vfs.sock")),),
                      pidfile=Path("/run/cocoon-vm/ab/vm/qemu.pid")))
    assert [b.path for b in binds if b.writable] == ["/run/cocoon-vm/ab/vm"]
    assert not any(b.path in ("/run/cocoon-vm/ab", "/run/cocoon-vm") for b in binds)
