"""What QEMU's own root holds, from its VM config: the guest's files read-only, the
directories of its sockets and log writable, each once, nothing of the sandbox beside them."""

from __future__ import annotations

from pathlib import Path

from cocoon.hypervisor.config import MemoryBackend, VirtioFsShare, VMConfig
from cocoon.hypervisor.jail import Bind, plan


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


def test_a_clone_gets_its_template_ram_and_a_template_build_its_directory() -> None:
    clone = plan(make(memory_backend=MemoryBackend("file", Path("/cache/t/ram"), share=False)))
    assert Bind("/cache/t/ram", writable=True, directory=False) in clone
    build = plan(make(memory_backend=MemoryBackend("file", Path("/cache/tmp-t/ram")),
                      console_log=Path("/cache/tmp-t/console.log")))
    assert [b for b in build if b.path.startswith("/cache/tmp-t")] == \
        [Bind("/cache/tmp-t", writable=True)]
    assert not [b for b in plan(make(memory_backend=MemoryBackend("fd", fd=5)))
                if "proc" in b.path]


def test_virtiofsds_socket_directory_and_nothing_of_the_sandbox_beside() -> None:
    binds = plan(make(memory_backend=MemoryBackend("memfd"),
                      shares=(VirtioFsShare("cocoon", Path("/run/cocoon-vm/ab/vm/vfs.sock")),),
                      pidfile=Path("/run/cocoon-vm/ab/vm/qemu.pid")))
    assert [b.path for b in binds if b.writable] == ["/run/cocoon-vm/ab/vm"]
    assert not any(b.path in ("/run/cocoon-vm/ab", "/run/cocoon-vm") for b in binds)
