"""Host check verdicts from given inputs, and the rendered table."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from cocoon.hypervisor import hostcheck
from cocoon.hypervisor.accel import AccelDecision
from cocoon.hypervisor.hostcheck import Check, HostReport

NOWHERE = Path("/nonexistent/cocoon-test")

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
LEGACY = "cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\nproc /proc proc rw 0 0\n"

TCG = AccelDecision("tcg", "qemu64,+rdrand", "KVM probe VM did not boot within 10 s", "cache",
                    verified=True, kvm_usable=False,
                    kvm_detail="/dev/kvm opens (KVM API 12), but KVM probe VM did not boot "
                               "within 10 s",
                    boot_seconds=1.934, probed_at=1_700_000_000.0)


def meminfo(available_kib: int) -> str:
    return f"MemTotal: 24000000 kB\nMemFree: 1 kB\nMemAvailable: {available_kib} kB\n"


def test_cgroup_layouts() -> None:
    hybrid = hostcheck.check_cgroups(HYBRID)
    assert hybrid.verdict == "ok"
    assert hybrid.detail.startswith("hybrid: v1 (cpu, memory)")
    assert "/sys/fs/cgroup/unified" in hybrid.detail
    assert hostcheck.check_cgroups(UNIFIED).detail == "v2 (unified) at /sys/fs/cgroup"
    assert hostcheck.check_cgroups(LEGACY).detail == "v1: pids"
    assert hostcheck.check_cgroups("proc /proc proc rw 0 0\n").verdict == "warn"


def test_memory_thresholds() -> None:
    assert hostcheck.check_memory(meminfo(8 * 1024 * 1024)).verdict == "ok"
    tight = hostcheck.check_memory(meminfo(600 * 1024))
    assert (tight.verdict, tight.detail.split()[0]) == ("warn", "600")
    assert hostcheck.check_memory(meminfo(300 * 1024)).verdict == "fail"
    assert hostcheck.check_memory("MemTotal: 1 kB\n").verdict == "warn"


def test_kvm_chosen() -> None:
    kvm = dataclasses.replace(TCG, accel="kvm", cpu_model="host", reason="KVM probe VM booted",
                              kvm_usable=True, kvm_detail="/dev/kvm opens; booted in 0.4 s",
                              boot_seconds=0.4)
    kvm_check, accel_check = hostcheck.acceleration_checks(kvm, (True, "/dev/kvm opens"))
    assert (kvm_check.verdict, accel_check.verdict) == ("ok", "ok")
    assert accel_check.detail.startswith("kvm (cpu host); probe boot 0.40 s")


def test_tcg_chosen_says_why_not_kvm() -> None:
    kvm_check, accel_check = hostcheck.acceleration_checks(TCG, (True, "/dev/kvm opens"))
    assert kvm_check.verdict == "warn"
    assert "did not boot within 10 s" in kvm_check.detail
    assert accel_check.verdict == "ok"
    assert "tcg (cpu qemu64,+rdrand); probe boot 1.93 s; probed " in accel_check.detail
    assert accel_check.detail.endswith(", cached")


def test_tcg_that_does_not_boot_fails() -> None:
    broken = dataclasses.replace(TCG, verified=False, boot_seconds=None, source="probe")
    assert hostcheck.acceleration_checks(broken, (False, "x"))[1].verdict == "fail"


def test_env_forced_is_ok_unverified() -> None:
    forced = AccelDecision("tcg", "qemu64,+rdrand", "set by COCOON_ACCEL", "env",
                           verified=False, kvm_usable=False, kvm_detail="not probed")
    accel_check = hostcheck.acceleration_checks(forced, (False, "x"))[1]
    assert accel_check.verdict == "ok"
    assert "forced by COCOON_ACCEL" in accel_check.detail


def test_no_decision_fails() -> None:
    kvm_check, accel_check = hostcheck.acceleration_checks(None, (False, "/dev/kvm does not exist"))
    assert kvm_check.detail == "/dev/kvm does not exist"
    assert accel_check.verdict == "fail"


def test_missing_host_pieces() -> None:
    qemu, usable = hostcheck.check_qemu("cocoon-no-such-qemu")
    assert (qemu.verdict, usable) == ("fail", False)
    assert hostcheck.check_qboot(NOWHERE).verdict == "warn"
    assert hostcheck.check_virtiofsd(NOWHERE).verdict == "warn"
    tun = hostcheck.check_tun(NOWHERE)
    assert tun.verdict == "warn" and "--net=none" in tun.detail
    vsock = hostcheck.check_vsock(NOWHERE)
    assert vsock.verdict == "ok" and "virtio-serial" in vsock.detail


def test_present_host_pieces(tmp_path: Path) -> None:
    firmware = tmp_path / "qboot.rom"
    firmware.write_bytes(b"\0")
    assert hostcheck.check_qboot(firmware).verdict == "ok"
    assert hostcheck.check_vsock(firmware).detail.endswith("present")
    assert hostcheck.check_tun(Path("/dev/null")).verdict == "ok"  # opens like any device


def test_report_ok_and_render_alignment() -> None:
    report = HostReport((Check("qemu", "ok", "7.2.22"), Check("kvm", "warn", "not used"),
                         Check("vhost-vsock", "ok", "absent")), TCG)
    assert report.ok
    lines = report.render().splitlines()
    assert lines[0].split() == ["CHECK", "VERDICT", "DETAIL"]
    detail_column = {line.index(word) for line, word in
                     zip(lines[:4], ["DETAIL", "7.2.22", "not used", "absent"], strict=True)}
    assert len(detail_column) == 1
    assert lines[-1] == "VMs can run, with tcg (cpu qemu64,+rdrand)"


def test_report_fails_on_any_fail() -> None:
    report = HostReport((Check("qemu", "fail", "not found"), Check("memory", "fail", "100 MiB"),
                         Check("kvm", "warn", "absent")))
    assert not report.ok
    assert report.render().splitlines()[-1] == \
        "VMs cannot run on this host (failed: qemu, memory)"


def test_qemu_sandbox_verdicts() -> None:
    ok = hostcheck.qemu_sandbox_verdict(0, "", "2")
    assert ok.verdict == "ok" and "spawn" in ok.detail and "elevateprivileges" in ok.detail
    unbuilt = hostcheck.qemu_sandbox_verdict(
        1, "qemu-system-x86_64: -sandbox on: seccomp support is disabled\n", "")
    assert unbuilt.verdict == "fail" and unbuilt.detail.count("\n") == 0
    assert "seccomp support is disabled" in unbuilt.detail
    unfiltered = hostcheck.qemu_sandbox_verdict(0, "", "0")
    assert unfiltered.verdict == "fail" and "Seccomp: 0" in unfiltered.detail
    assert hostcheck.check_qemu_sandbox("/nonexistent/qemu").verdict == "fail"


def test_qemu_user_line() -> None:
    """As root on this host: QEMU runs as uid QEMU_ID_BASE+pid; a QEMU that cannot run as it
    fails the line, in one line naming the binary."""
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        assert hostcheck.check_qemu_user("qemu-system-x86_64").verdict != "ok"
        return
    line = hostcheck.check_qemu_user("qemu-system-x86_64")
    assert line.verdict == "ok" and "2080374784+pid" in line.detail, line
    # root's directory is no program for anyone, and QEMU's user may not even look in it
    broken = hostcheck.check_qemu_user("/root/qemu")
    assert broken.verdict == "fail" and "/root/qemu" in broken.detail
    assert "\n" not in broken.detail
