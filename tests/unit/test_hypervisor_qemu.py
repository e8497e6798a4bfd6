"""The QEMU driver's pure helpers and its refusals before anything is spawned.

Booting and killing real VMs is in tests/vm/test_qemu.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from cocoon.errors import HypervisorError
from cocoon.hypervisor.config import MemoryBackend, VMConfig
from cocoon.hypervisor.qemu import QemuVM, console_tail, describe_exit


def make(tmp_path: Path, **overrides: object) -> VMConfig:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0")
    fields: dict[str, object] = {"name": "t", "kernel": kernel, "qmp_socket": tmp_path / "q.sock",
                                 "console_log": tmp_path / "console.log", "firmware": kernel}
    fields.update(overrides)
    return VMConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "text"), [
    (0, "with status 0"), (1, "with status 1"), (-9, "on signal SIGKILL"),
    (-6, "on signal SIGABRT"), (-200, "on signal 200"), (None, "(still running)"),
])
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_console_tail_strips_escapes_and_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"Booting from ROM..\x1b[?7l\x1b[2JHELLO\r\n\r\n[    1.7] reboot: Power down\n"
                    b"qemu-system-x86_64: terminating on signal 15\n\xff\n")
    assert console_tail(log) == ["Booting from ROM..HELLO", "[    1.7] reboot: Power down",
                                 "qemu-system-x86_64: terminating on signal 15", "\ufffd"]
    assert console_tail(log, 1) == ["\ufffd"]


def test_console_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert console_tail(log, 3) == ["line 99997", "line 99998", "line 99999"]


def test_console_tail_of_missing_log(tmp_path: Path) -> None:
    assert console_tail(tmp_path / "none.log") == []


def test_missing_kernel_is_refused_before_spawning(tmp_path: Path) -> None:
    vm = QemuVM(make(tmp_path, initrd=tmp_path / "missing.img"))
    with pytest.raises(HypervisorError, match="initrd not found") as info:
        asyncio.run(vm.start())
    assert info.value.evidence["path"] == str(tmp_path / "missing.img")
    assert vm.pid is None
    assert not (tmp_path / "console.log").exists()


def test_vsock_without_vhost_vsock_is_refused(tmp_path: Path) -> None:
    if Path("/dev/vhost-vsock").exists():
        pytest.skip("this host has vhost-vsock")
    with pytest.raises(HypervisorError, match="vhost-vsock"):
        asyncio.run(QemuVM(make(tmp_path, vsock_cid=3)).start())


def test_stale_socket_is_removed_but_other_files_are_not(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "q.sock"))
    stale.close()
    (tmp_path / "a.sock").write_text("not a socket")
    vm = QemuVM(make(tmp_path, agent_socket=tmp_path / "a.sock"))
    with pytest.raises(HypervisorError, match="is not a socket"):
        asyncio.run(vm.start())
    assert not (tmp_path / "q.sock").exists()
    assert (tmp_path / "a.sock").read_text() == "not a socket"


def test_missing_qemu_binary(tmp_path: Path) -> None:
    vm = QemuVM(make(tmp_path, qemu_binary="/nonexistent/qemu-system-x86_64"))
    with pytest.raises(HypervisorError, match="cannot start /nonexistent/qemu") as info:
        asyncio.run(vm.start())
    assert info.value.evidence["argv"][0] == "/nonexistent/qemu-system-x86_64"
    assert vm.pid is None


def test_calls_before_start_are_refused(tmp_path: Path) -> None:
    vm = QemuVM(make(tmp_path))
    with pytest.raises(HypervisorError, match="not started"):
        asyncio.run(vm.status())
    with pytest.raises(HypervisorError, match="not started"):
        asyncio.run(vm.kill())
    assert asyncio.run(vm.stop()) is None
    assert (vm.pid, vm.returncode, vm.running) == (None, None, False)


@pytest.mark.skipif(os.geteuid() != 0, reason="QEMU gets a user of its own only from root")
def test_a_private_mapping_of_a_file_is_refused_for_qemus_own_user(tmp_path: Path) -> None:
    """QEMU 7.2 opens it read-write, which its user may not: said before spawning."""
    ram = tmp_path / "ram"
    ram.write_bytes(b"\0" * 4096)
    vm = QemuVM(make(tmp_path, memory_backend=MemoryBackend("file", ram, share=False)))
    with pytest.raises(HypervisorError, match=f"private mapping of {ram} needs QEMU to open "
                       "it read-write"):
        asyncio.run(vm.start())
    assert vm.pid is None and not (tmp_path / "console.log").exists()


def test_a_console_log_that_is_a_link_is_replaced_not_followed(tmp_path: Path) -> None:
    """QEMU's user owns its directory: a link it left at the log's name must not make the
    monitor truncate (or, reading the tail, disclose) the file it names."""
    host_file = tmp_path / "host-file"
    host_file.write_text("precious\n")
    log = tmp_path / "console.log"
    log.symlink_to(host_file)
    assert console_tail(log) == []
    vm = QemuVM(make(tmp_path, qemu_binary="/nonexistent/qemu-system-x86_64"))
    with pytest.raises(HypervisorError, match="cannot start"):
        asyncio.run(vm.start())
    assert host_file.read_text() == "precious\n"
    assert not log.is_symlink() and log.is_file()


def test_console_tail_of_a_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "console.log"
    os.mkfifo(fifo)
    assert console_tail(fifo) == []
