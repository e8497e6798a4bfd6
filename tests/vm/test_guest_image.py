"""The guest image boots: Python runs as PID 1 under the guest kernel with what the agent needs.

A test variant of the image (same packages, modules and agent code; /init replaced by a probe
script) boots under QEMU/TCG. The probe imports the agent's dependencies, exercises protobuf,
asyncio and a seccomp filter, loads every module in /etc/cocoon/modules with finit_module,
and prints a JSON report with the guest kernel's release before powering off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cocoon.guest import assets, kmods
from cocoon.guest.floor import MARKER as FLOOR_MARKER

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]

REPORT = "COCOON-TEST-REPORT"
BOOT_TIMEOUT = 180.0  # TCG boots in a few seconds; other suites may share the two cores

PROBE_INIT = f'''#!/usr/bin/python3.11 -ISB
import ctypes, errno, json, os, sys
sys.path[0:0] = ["/usr/lib/cocoon", "/usr/lib/python3/dist-packages"]
report = {{"release": os.uname().release, "errors": [], "loaded": []}}
try:
    import asyncio, seccomp
    import google.protobuf
    from google.protobuf import timestamp_pb2
    from google.protobuf.internal import api_implementation
    report["protobuf"] = api_implementation.Type()
    report["timestamp"] = timestamp_pb2.Timestamp(seconds=7).SerializeToString().hex()

    async def answer():
        await asyncio.sleep(0)
        return 42
    report["asyncio"] = asyncio.run(answer())

    libc = ctypes.CDLL(None, use_errno=True)
    for path in open("/etc/cocoon/modules").read().split():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        rc = libc.syscall(313, fd, b"", 0)  # finit_module
        err = ctypes.get_errno()
        os.close(fd)
        if rc != 0 and err != errno.EEXIST:
            report["errors"].append(f"{{path}}: {{os.strerror(err)}}")
        else:
            report["loaded"].append(path)
    if libc.mount(b"proc", b"/proc", b"proc", 0, None) != 0:
        report["errors"].append("mount /proc: " + os.strerror(ctypes.get_errno()))
    report["proc_modules"] = sorted(line.split()[0] for line in open("/proc/modules"))

    pid = os.fork()
    if pid == 0:
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        f.add_rule(seccomp.ERRNO(errno.EPERM), "mkdir")
        f.load()
        try:
            os.mkdir("/denied")
        except PermissionError:
            os._exit(0)
        os._exit(1)
    report["seccomp_denied_mkdir"] = os.waitpid(pid, 0)[1] == 0
except BaseException as exc:
    report["errors"].append(repr(exc))
print("{REPORT} " + json.dumps(report), flush=True)
os.execv("/bin/busybox", ["poweroff", "-f"])
'''.encode()


def _boot(vmlinuz: Path, initrd: Path) -> str:
    cmd = ["qemu-system-x86_64", "-M", "pc,accel=tcg", "-cpu", "qemu64,+rdrand", "-m", "256",
           "-bios", "/usr/share/qemu/qboot.rom", "-kernel", str(vmlinuz), "-initrd", str(initrd),
           "-append", "console=ttyS0 quiet panic=-1", "-nographic", "-no-reboot",
           "-nodefaults", "-serial", "stdio"]
    proc = subprocess.run(cmd, capture_output=True, timeout=BOOT_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    return proc.stdout.decode(errors="replace")


def _report(console: str) -> dict[str, Any]:
    for line in console.splitlines():
        if line.startswith(REPORT):
            report: dict[str, Any] = json.loads(line[len(REPORT):])
            return report
    raise AssertionError(f"no {REPORT} line on the console:\n{console[-3000:]}")


@pytest.fixture(scope="module")
def probe_image() -> assets.GuestImage:
    return assets.ensure_guest_image(init=PROBE_INIT)


def test_python_is_init_and_has_what_the_agent_needs(probe_image: assets.GuestImage) -> None:
    report = _report(_boot(probe_image.kernel.vmlinuz, probe_image.initrd))
    assert report["errors"] == []
    assert report["release"] == probe_image.kernel.release
    assert report["release"] != os.uname().release
    assert report["protobuf"] == "upb"
    assert report["timestamp"] == "0807"
    assert report["asyncio"] == 42
    assert report["seccomp_denied_mkdir"] is True


def test_every_listed_module_loads(probe_image: assets.GuestImage) -> None:
    report = _report(_boot(probe_image.kernel.vmlinuz, probe_image.initrd))
    assert probe_image.kernel.modules_dir is not None  # Debian's kernel has its tree
    listed = kmods.resolve_for(probe_image.kernel.modules_dir)
    assert len(report["loaded"]) == len(listed)
    for name in kmods.GUEST_MODULES:
        assert name in report["proc_modules"], f"{name} not loaded in the guest"


def test_floor_initrd_prints_its_marker_and_powers_off() -> None:
    kernel = assets.ensure_kernel()
    console = _boot(kernel.vmlinuz, assets.ensure_floor_initrd())
    assert FLOOR_MARKER in console
    assert "reboot: Power down" in console


def test_agent_image_is_found_once_built() -> None:
    image = assets.ensure_guest_image()
    assert assets.find_guest_image() == image
    manifest = json.loads(image.manifest.read_text())
    assert manifest["digest"] == image.digest
    assert manifest["sizes"]["initrd"] == image.initrd.stat().st_size
    assert assets.find_guest_image(init=b"#!/never/built\n") is None


def test_same_inputs_give_a_byte_identical_image(probe_image: assets.GuestImage,
                                                 tmp_path: Path) -> None:
    """A second build in a fresh cache (sharing only the downloaded inputs) gives the same bytes."""
    source = probe_image.initrd.parents[2]
    other = tmp_path / "cache"
    shutil.copytree(source / "debs", other / "debs", copy_function=os.link)
    shutil.copytree(source / "apt", other / "apt")
    shutil.copytree(source / "kernel" / probe_image.kernel.release,
                    other / "kernel" / probe_image.kernel.release, symlinks=True)
    again = assets.ensure_guest_image(other, init=PROBE_INIT)
    assert again.digest == probe_image.digest
    assert again.initrd.read_bytes() == probe_image.initrd.read_bytes()
