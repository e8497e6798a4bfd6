"""The QEMU driver and the acceleration probe against real QEMU and the real guest kernel.

Two guests: the floor initrd (prints COCOON-FLOOR-OK, powers off at once) and a test initrd
that waits for the ACPI power button, so a graceful power-off is seen to come from the guest.
Every VM is named with this run's prefix, and each test ends by checking with pgrep that none
of them is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoon.errors import VMDiedError
from cocoon.guest import assets, cpio
from cocoon.hypervisor import accel
from cocoon.hypervisor.accel import AccelDecision
from cocoon.hypervisor.config import MemoryBackend, VirtioFsShare, VMConfig
from cocoon.hypervisor.hostcheck import VIRTIOFSD, check_qemu_sandbox
from cocoon.hypervisor.probe import FLOOR_MARKER, probe_boot
from cocoon.hypervisor.qemu import QemuVM
from cocoon.hypervisor.vmuser import qemu_ids
from tests.framework.qemuuser import (
    as_qemu,
    assert_cannot_read,
    assert_runs_as_its_own_user,
    proc_status,
)

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]

RUN = f"h4t{os.getpid()}"
READY = "COCOON-TEST-READY"
PRESSED = "COCOON-TEST-POWER-BUTTON"
BOOT_BOUND = 60.0  # generous: TCG boots in about 2 s, but other suites may share the 2 cores

BUTTON_INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox insmod /lib/evdev.ko
/bin/busybox insmod /lib/button.ko
ev=none
for d in /sys/class/input/event*; do
  [ "$(/bin/busybox cat $d/device/name)" = "Power Button" ] && ev=${{d##*/}}
done
# open the device before saying ready: evdev queues events for open readers only, so a press
# that came between the message and the open would be lost
[ $ev = none ] || exec 3</dev/input/$ev
echo "{READY} $ev"
/bin/busybox head -c 1 <&3 >/dev/null
echo {PRESSED}
/bin/busybox poweroff -f
"""


@dataclass(frozen=True)
class Guest:
    kernel: Path
    kernel_release: str
    floor: Path
    button: Path


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Guest:
    kernel = assets.ensure_kernel()
    assert kernel.modules_dir is not None  # Debian's kernel has its tree
    busybox = assets.ensure_busybox_rootfs() / "bin" / "busybox"
    modules = {}
    for name, rel in (("evdev", "kernel/drivers/input"), ("button", "kernel/drivers/acpi")):
        path = kernel.modules_dir / rel / f"{name}.ko"
        if not path.is_file():
            pytest.skip(f"{path} missing (compressed or built-in modules)")
        modules[name] = path.read_bytes()
    button = tmp_path_factory.mktemp("button") / "initrd.cpio"
    with button.open("wb") as out:
        cpio.write(out, [
            cpio.directory("bin"), cpio.directory("dev"), cpio.directory("lib"),
            cpio.directory("proc"), cpio.directory("sys"),
            cpio.chardev("dev/console", 5, 1),
            cpio.regular("bin/busybox", busybox.read_bytes(), 0o755),
            cpio.regular("lib/evdev.ko", modules["evdev"]),
            cpio.regular("lib/button.ko", modules["button"]),
            cpio.regular("init", BUTTON_INIT.encode(), 0o755),
        ])
    return Guest(kernel.vmlinuz, kernel.release, assets.ensure_floor_initrd(), button)


@pytest.fixture(scope="module")
def decision(guest: Guest) -> AccelDecision:
    """The acceleration VMs get on this host: COCOON_ACCEL, the cached probe, or a probe."""
    return asyncio.run(accel.decide(kernel=guest.kernel, kernel_release=guest.kernel_release,
                                    floor_initrd=guest.floor))


def qemu_of_this_run(prefix: str = RUN) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", f"qemu-system-x86_64 -name {prefix}"],
                           capture_output=True, text=True, check=False).stdout
    return found.splitlines()


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    yield
    left = qemu_of_this_run() + qemu_of_this_run(f"probe-[a-z]*-{os.getpid()}")
    assert left == [], f"QEMU left running: {left}"


def config(tmp_path: Path, guest: Guest, decision: AccelDecision, name: str,
           initrd: Path | None = None, **overrides: object) -> VMConfig:
    fields: dict[str, object] = {
        "name": f"{RUN}-{name}", "kernel": guest.kernel, "initrd": initrd or guest.button,
        "accel": decision.accel, "cpu_model": decision.cpu_model,
        "qmp_socket": tmp_path / "qmp.sock", "agent_socket": tmp_path / "agent.sock",
        "console_log": tmp_path / "console.log", "pidfile": tmp_path / "qemu.pid",
    }
    fields.update(overrides)
    return VMConfig(**fields)  # type: ignore[arg-type]


def console(vm: QemuVM) -> str:
    return vm.config.console_log.read_text(errors="replace")


async def console_shows(vm: QemuVM, text: str, timeout: float = BOOT_BOUND) -> float:
    """Seconds since spawn when `text` appeared; fails the test if QEMU exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in console(vm):
            return vm.elapsed()
        assert vm.running, f"QEMU exited {vm.returncode}: {vm.console_tail()}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not on the console within {timeout} s: {vm.console_tail()}")


def test_floor_boots_under_the_probed_acceleration(tmp_path: Path, guest: Guest,
                                                  decision: AccelDecision) -> None:
    async def scenario() -> None:
        async with QemuVM(config(tmp_path, guest, decision, "floor", guest.floor)) as vm:
            assert await vm.status() == "running"
            assert int((tmp_path / "qemu.pid").read_text()) == vm.pid
            # the floor powers itself off; -no-reboot makes that the end of QEMU
            assert await vm.wait(BOOT_BOUND) == 0
            assert FLOOR_MARKER in console(vm)
            assert list(vm.phases) == ["qemu-started", "qmp-connected", "qemu-exited"]
            assert vm.phases["qemu-started"] < vm.phases["qmp-connected"] < \
                vm.phases["qemu-exited"]

    asyncio.run(scenario())


@pytest.mark.parametrize("machine", ["q35", "microvm"])
def test_other_machine_types_boot(tmp_path: Path, guest: Guest, decision: AccelDecision,
                                  machine: str) -> None:
    async def scenario() -> None:
        cfg = config(tmp_path, guest, decision, machine, guest.floor, machine=machine)
        async with QemuVM(cfg) as vm:
            assert await vm.wait(BOOT_BOUND) == 0
            assert FLOOR_MARKER in console(vm)

    asyncio.run(scenario())


@pytest.mark.skipif(not VIRTIOFSD.exists(), reason="virtiofsd not installed")
def test_virtio_fs_share_memfd_and_hotplug_ports_reach_qemu(tmp_path: Path, guest: Guest,
                                                           decision: AccelDecision) -> None:
    """What the unit tests check as strings, QEMU accepts: the devices exist on its PCI bus."""
    (tmp_path / "shared").mkdir()
    fs_socket = tmp_path / "fs.sock"
    virtiofsd = subprocess.Popen([str(VIRTIOFSD), f"--socket-path={fs_socket}",
                                  "-o", f"source={tmp_path / 'shared'}", "-o", "cache=auto"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def scenario() -> None:
        while not fs_socket.exists():
            assert virtiofsd.poll() is None, "virtiofsd exited"
            await asyncio.sleep(0.02)
        cfg = config(tmp_path, guest, decision, "virtiofs", machine="q35", hotplug_ports=2,
                     memory_backend=MemoryBackend("memfd"),
                     shares=(VirtioFsShare("root", fs_socket),))
        async with QemuVM(cfg) as vm:
            buses = await vm.execute("query-pci")
            assert isinstance(buses, list)
            found = [(dev["qdev_id"], dev["id"]["vendor"], dev["id"]["device"])
                     for bus in buses for dev in bus["devices"]]
            assert (0x1AF4, 0x105A) in [(vendor, device) for _, vendor, device in found]
            assert [qdev for qdev, _, _ in found if qdev.startswith("hp")] == ["hp0", "hp1"]
            memdevs = await vm.execute("query-memdev")
            assert isinstance(memdevs, list)
            assert [(m["id"], m["share"], m["size"]) for m in memdevs] == \
                [("ram", True, 256 << 20)]

    try:
        asyncio.run(scenario())
    finally:
        virtiofsd.kill()
        virtiofsd.wait(10)


def test_cocoon_check_sees_the_seccomp_filter_in_force() -> None:
    check = check_qemu_sandbox("qemu-system-x86_64")
    assert check.verdict == "ok", check.detail


@pytest.mark.parametrize("seccomp", [True, False])
def test_qemu_cannot_spawn_a_process(tmp_path: Path, guest: Guest, decision: AccelDecision,
                                     seccomp: bool) -> None:
    """A QEMU turned against the host by its guest holds no capability and cannot run a
    program: `migrate exec:`
    (QEMU forks a shell) kills it with SIGSYS and the program never runs. Without the
    filter (the control case) the same command runs it, so the test can tell them apart."""
    spawned = tmp_path / "spawned"

    async def scenario() -> None:
        cfg = config(tmp_path, guest, decision, f"spawn-{seccomp}", seccomp=seccomp)
        async with QemuVM(cfg, warn_on_death=False) as vm:
            await console_shows(vm, READY)
            assert vm.pid is not None
            status = proc_status(vm.pid)
            assert (status["Seccomp"], status["NoNewPrivs"]) == \
                (("2", "1") if seccomp else ("0", "0"))
            # a user of its own, without a capability: none to use, none exec could grant
            assert status["Uid"].split() == [str(qemu_ids(vm.pid))] * 4
            for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(status[caps], 16) == 0, (caps, status[caps])
            # the warm pool renices QEMU from outside: still allowed
            os.setpriority(os.PRIO_PROCESS, vm.pid, 3)
            assert await vm.status() == "running"
            try:
                await vm.execute("migrate", {"uri": f"exec:touch {spawned}"})
            except VMDiedError:
                assert seccomp
            if seccomp:
                assert await vm.wait(BOOT_BOUND) == -signal.SIGSYS
            else:
                deadline = time.monotonic() + BOOT_BOUND
                while not spawned.exists() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        assert spawned.exists() == (not seccomp)

    asyncio.run(scenario())


def test_qemu_sees_only_its_own_files(tmp_path: Path, guest: Guest,
                                      decision: AccelDecision) -> None:
    """QEMU runs as a user of its own (uid and gid `qemu_ids(pid)`, no supplementary group, no
    capability). From a process in QEMU's mount namespace and root holding what QEMU holds
    (its uid and gid, no capability): its own sockets are there and its devices its own; the
    host's /etc, the sandbox's other files (the monitor's socket, beside QEMU's directory), a
    share mounted inside QEMU's directory, another VM's directory, the host's root through
    /proc/1/root and another QEMU's files through /proc/<pid>/root are not, and /proc shows
    QEMU's process alone."""
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    (tmp_path / "monitor.sock").write_text("the monitor's")
    (vm_dir / "shared").mkdir()
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "secret").write_text("a container's")
    subprocess.run(["mount", "--bind", str(tmp_path / "rootfs"), str(vm_dir / "shared")],
                   check=True)

    other_dir = tmp_path / "other"
    other_dir.mkdir()

    async def scenario() -> None:
        cfg = config(vm_dir, guest, decision, "own-root")
        other_cfg = config(other_dir, guest, decision, "other-root")
        async with QemuVM(cfg) as vm, QemuVM(other_cfg) as other:
            await console_shows(vm, READY)
            assert vm.pid is not None and other.pid is not None
            assert vm.uid == qemu_ids(vm.pid) != other.uid == qemu_ids(other.pid)
            assert_runs_as_its_own_user(vm.pid)
            mine = as_qemu(vm.pid, "/usr/bin/test", "-S", str(vm_dir / "qmp.sock"))
            assert mine.returncode == 0, mine.stderr
            if Path("/dev/kvm").exists():  # its own node, whatever the host's mode
                assert as_qemu(vm.pid, "/usr/bin/test", "-O", "/dev/kvm").returncode == 0
            assert_cannot_read(vm.pid, "/etc/shadow", "/etc/hostname", tmp_path / "monitor.sock",
                               vm_dir / "shared" / "secret", other_dir / "console.log",
                               "/proc/1/root/etc/shadow", f"/proc/{os.getpid()}/status",
                               # another sandbox's QEMU: as bare as this one, another user
                               f"/proc/{other.pid}/root/{other_dir}/console.log",
                               f"/proc/{other.pid}/status")
            # its own /proc shows its own user's processes only: QEMU and this very `ls`
            listed = as_qemu(vm.pid, "/usr/bin/ls", "/proc")
            pids = {int(name) for name in listed.stdout.split() if name.isdigit()}
            assert vm.pid in pids and other.pid not in pids and 1 not in pids, listed
            # the host's files it was given are read-only or its own, not root's to write
            written = as_qemu(vm.pid, "/usr/bin/touch", str(cfg.kernel))
            assert written.returncode != 0
            assert await vm.status() == "running"

    try:
        asyncio.run(scenario())
    finally:
        subprocess.run(["umount", str(vm_dir / "shared")], check=True)


def test_graceful_power_off_comes_from_the_guest(tmp_path: Path, guest: Guest,
                                                 decision: AccelDecision) -> None:
    async def scenario() -> None:
        async with QemuVM(config(tmp_path, guest, decision, "powerdown")) as vm:
            await console_shows(vm, READY)
            assert f"{READY} none" not in console(vm), "no power button in the guest"
            assert await vm.status() == "running"
            assert await vm.powerdown(timeout=BOOT_BOUND) == 0
            assert PRESSED in console(vm)
            assert not vm.running
            assert not (tmp_path / "qemu.pid").exists()  # QEMU removes it on a clean exit

    asyncio.run(scenario())


def test_kill_9_is_reported_promptly_as_vm_died(tmp_path: Path, guest: Guest,
                                               decision: AccelDecision) -> None:
    async def scenario() -> None:
        vm = QemuVM(config(tmp_path, guest, decision, "kill9"))
        try:
            await vm.start()
            await console_shows(vm, READY)
            assert vm.pid is not None
            assert [int(line.split()[0]) for line in qemu_of_this_run()] == [vm.pid]
            os.kill(vm.pid, signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(VMDiedError) as info:
                await vm.status()
            assert time.monotonic() - killed < 2.0
            assert info.value.evidence["exit_code"] == -signal.SIGKILL
            assert "on signal SIGKILL" in str(info.value)
            assert any(READY in line for line in info.value.evidence["console_tail"])
            assert await vm.wait(2.0) == -signal.SIGKILL
            with pytest.raises(VMDiedError):  # and every later call says so too
                await vm.execute("query-status")
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_quit_ends_qemu_without_the_guest(tmp_path: Path, guest: Guest,
                                          decision: AccelDecision) -> None:
    async def scenario() -> None:
        async with QemuVM(config(tmp_path, guest, decision, "quit")) as vm:
            await console_shows(vm, READY)
            assert await vm.quit() == 0
            assert PRESSED not in console(vm)
            assert await vm.stop() == 0  # stopping a stopped VM is harmless

    asyncio.run(scenario())


def test_qemu_start_failure_carries_its_error(tmp_path: Path, guest: Guest,
                                              decision: AccelDecision) -> None:
    vm = QemuVM(config(tmp_path, guest, decision, "badcpu", cpu_model="no-such-cpu-model"))
    with pytest.raises(VMDiedError) as info:
        asyncio.run(vm.start())
    assert info.value.evidence["exit_code"] == 1
    assert any("no-such-cpu-model" in line for line in info.value.evidence["console_tail"])
    assert vm.returncode == 1


def test_qemu_dies_with_its_owner(tmp_path: Path, guest: Guest,
                                  decision: AccelDecision) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the owner process, and its QEMU goes too."""
    cfg = config(tmp_path, guest, decision, "orphan")
    owner_code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from cocoon.hypervisor.config import VMConfig\n"
        "from cocoon.hypervisor.qemu import QemuVM\n"
        "async def main():\n"
        "    f = json.loads(sys.argv[1])\n"
        "    vm = QemuVM(VMConfig(name=f['name'], kernel=Path(f['kernel']),\n"
        "        initrd=Path(f['initrd']), accel=f['accel'], cpu_model=f['cpu'],\n"
        "        qmp_socket=Path(f['qmp']), console_log=Path(f['log'])))\n"
        "    await vm.start()\n"
        "    print(vm.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n")
    spec = {"name": cfg.name, "kernel": str(cfg.kernel), "initrd": str(cfg.initrd),
            "accel": cfg.accel, "cpu": cfg.cpu, "qmp": str(cfg.qmp_socket),
            "log": str(cfg.console_log)}
    owner = subprocess.Popen([sys.executable, "-c", owner_code, json.dumps(spec)],
                             stdout=subprocess.PIPE, text=True)
    qemu_pid = 0
    try:
        assert owner.stdout is not None
        qemu_pid = int(owner.stdout.readline())
        assert _alive(qemu_pid)
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 2.0
        while _alive(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(qemu_pid), "QEMU outlived its owner"
    finally:
        owner.kill()
        owner.wait(10)
        if qemu_pid and _alive(qemu_pid):
            os.kill(qemu_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, i.e. neither gone nor a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_probe_chooses_tcg_with_a_reason_when_kvm_does_not_boot(guest: Guest) -> None:
    key = accel.probe_key(guest.kernel_release)
    decision = asyncio.run(accel.probe_and_decide(key, kernel=guest.kernel,
                                                  initrd=guest.floor))
    assert decision.source == "probe" and decision.key == key
    assert decision.verified, decision.reason
    assert decision.boot_seconds is not None and decision.boot_seconds > 0
    device_ok, _ = accel.kvm_device()
    if decision.accel == "kvm":
        assert device_ok and decision.kvm_usable
        return
    # this project's build host: /dev/kvm opens but its VMs do not boot
    assert decision.cpu_model == "qemu64,+rdrand"
    assert not decision.kvm_usable
    assert decision.reason.startswith("KVM probe VM" if device_ok else "/dev/kvm")
    assert decision.reason in decision.kvm_detail


def test_probe_gives_up_at_its_bound(guest: Guest) -> None:
    """A guest that never prints the marker (the button guest waits forever) times out."""
    started = time.monotonic()
    result = asyncio.run(probe_boot("tcg", kernel=guest.kernel, initrd=guest.button,
                                    marker="NEVER-PRINTED", timeout=3.0))
    assert time.monotonic() - started < 3.0 + 5.0
    assert not result.booted
    assert result.detail == "TCG probe VM did not boot within 3 s"


def test_probe_reports_a_guest_that_exits_without_the_marker(guest: Guest) -> None:
    result = asyncio.run(probe_boot("tcg", kernel=guest.kernel, initrd=guest.floor,
                                    marker="NEVER-PRINTED", timeout=BOOT_BOUND))
    assert not result.booted
    assert result.detail.startswith("TCG probe VM: QEMU exited with status 0 before the guest")
