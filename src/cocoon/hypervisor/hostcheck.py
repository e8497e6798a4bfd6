"""`cocoon check`: each host capability Cocoon relies on, with a verdict and what was seen.

A verdict is `fail` only when VMs cannot run at all (no QEMU, no guest kernel, no acceleration
that boots, too little memory); anything that merely limits Cocoon (no KVM, no virtiofsd, no
tun device, no network namespaces) is a `warn` that says what is lost. The parsers take text
so they are tested without the host; `check_host` feeds them the real files.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cocoon.errors import CocoonError
from cocoon.hypervisor import accel, vmuser
from cocoon.hypervisor.cmdline import SECCOMP_SANDBOX
from cocoon.hypervisor.config import QBOOT
from cocoon.hypervisor.qemu import VHOST_VSOCK

Verdict = Literal["ok", "warn", "fail"]

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
TUN_DEVICE = Path("/dev/net/tun")
QEMU_BINARY = "qemu-system-x86_64"
VM_MEMORY_MIB = 256
# a 256 MiB guest plus QEMU's own 100-200 MiB (TCG code cache already trimmed by tb-size)
MIN_AVAILABLE_MIB = 384
COMFORTABLE_AVAILABLE_MIB = 1024


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class HostReport:
    checks: tuple[Check, ...]
    decision: accel.AccelDecision | None = None

    @property
    def ok(self) -> bool:
        """False when VMs cannot run on this host."""
        return all(check.verdict != "fail" for check in self.checks)

    def render(self) -> str:
        """An aligned table and a one-line conclusion."""
        rows = [("CHECK", "VERDICT", "DETAIL")]
        rows += [(check.name, check.verdict, check.detail) for check in self.checks]
        name_width = max(len(row[0]) for row in rows)
        verdict_width = max(len(row[1]) for row in rows)
        lines = [f"{name:<{name_width}}  {verdict:<{verdict_width}}  {detail}".rstrip()
                 for name, verdict, detail in rows]
        if not self.ok:
            failed = ", ".join(check.name for check in self.checks if check.verdict == "fail")
            lines.append(f"VMs cannot run on this host (failed: {failed})")
        elif self.decision is not None:
            lines.append(f"VMs can run, with {self.decision.accel} "
                         f"(cpu {self.decision.cpu_model})")
        else:
            lines.append("VMs can run")
        return "\n".join(lines)


def check_host(reprobe: bool = False, cache_dir: Path | None = None) -> HostReport:
    """Inspect this host; runs (or reads the cached) acceleration probe, fetching guest assets
    if they are not yet in the cache because the probe boots them."""
    qemu_check, qemu_ok = check_qemu(QEMU_BINARY)
    checks = [qemu_check, check_qboot(QBOOT)]
    if qemu_ok:
        checks += [check_qemu_sandbox(QEMU_BINARY), check_qemu_user(QEMU_BINARY)]
    asset_checks, kernel, initrd = check_guest_assets(cache_dir)
    checks += asset_checks
    decision: accel.AccelDecision | None = None
    try:
        decision = accel.from_env()
        if decision is None and qemu_ok and kernel is not None and initrd is not None:
            decision = asyncio.run(accel.decide(
                kernel=kernel[0], kernel_release=kernel[1], floor_initrd=initrd,
                cache_dir=cache_dir, reprobe=reprobe))
    except CocoonError as err:
        checks.append(Check("acceleration", "fail", f"probe failed: {err}"))
    else:
        checks += acceleration_checks(decision, accel.kvm_device())
    checks += [
        check_virtiofsd(VIRTIOFSD),
        check_tun(TUN_DEVICE),
        check_netns(),
        check_cgroups(_read("/proc/self/mounts")),
        check_memory(_read("/proc/meminfo")),
        check_vsock(VHOST_VSOCK),
    ]
    return HostReport(tuple(checks), decision)


def check_qemu(binary: str) -> tuple[Check, bool]:
    path = shutil.which(binary)
    if path is None:
        return Check("qemu", "fail", f"{binary} not found on PATH (apt install qemu-system-x86)"),\
            False
    try:
        version = accel.qemu_version(path)
    except CocoonError as err:
        return Check("qemu", "fail", str(err)), False
    return Check("qemu", "ok", f"{binary} {version} ({path})"), True


def check_qemu_sandbox(binary: str) -> Check:
    """Start QEMU with no machine under the seccomp filter VMs get, see the filter in force
    (Seccomp 2 in its /proc status), and quit it over QMP on its stdin."""
    argv = [binary, "-sandbox", SECCOMP_SANDBOX, "-M", "none", "-nodefaults",
            "-no-user-config", "-display", "none", "-qmp", "stdio"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError as err:
        return Check("qemu sandbox", "fail", f"cannot run {binary}: {err}")
    seccomp = ""
    try:
        assert proc.stdout is not None
        if proc.stdout.readline():  # the QMP greeting: the filter is installed by then
            seccomp = _status_field(_read(f"/proc/{proc.pid}/status"), "Seccomp")
        _, err_text = proc.communicate('{"execute": "qmp_capabilities"}\n'
                                       '{"execute": "quit"}\n', timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err_text = proc.communicate()
    return qemu_sandbox_verdict(proc.returncode, err_text, seccomp)


def qemu_sandbox_verdict(returncode: int | None, stderr: str, seccomp: str) -> Check:
    if returncode == 0 and seccomp == "2":
        groups = [part.split("=")[0] for part in SECCOMP_SANDBOX.split(",")[1:]]
        return Check("qemu sandbox", "ok", f"seccomp filter on, {', '.join(groups)} denied")
    reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {returncode}"
    if returncode == 0:
        reason = f"the filter is not in force (Seccomp: {seccomp or 'unknown'})"
    return Check("qemu sandbox", "fail", f"QEMU refuses -sandbox {SECCOMP_SANDBOX}: {reason} "
                 "(a QEMU built with seccomp is needed)")


def check_qemu_user(binary: str) -> Check:
    """QEMU's own user (`vmuser`): its ids mapped here and nobody else's, and QEMU runs as
    one of them (`--version`, started the way VMs are: no group, the ids of its pid)."""
    if not vmuser.runs_as_own_user():
        return Check("qemu user", "warn", "not root: QEMU runs as the caller, in no root of "
                     "its own")
    problem = vmuser.mapping_problem()
    if problem is not None:
        return Check("qemu user", "fail", f"{problem}: VMs refuse to start")

    def become() -> None:
        ids = vmuser.qemu_ids(os.getpid())
        os.setgroups([])
        os.setresgid(ids, ids, ids)
        os.setresuid(ids, ids, ids)

    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                timeout=10, check=False, preexec_fn=become)
    except (OSError, subprocess.SubprocessError) as err:
        return Check("qemu user", "fail", f"{binary} does not run as uid {vmuser.QEMU_ID_BASE}"
                     f"+pid: {err}")
    if result.returncode != 0:
        return Check("qemu user", "fail", f"{binary} does not run as uid "
                     f"{vmuser.QEMU_ID_BASE}+pid: {result.stderr.strip() or result.returncode}")
    detail = (f"each QEMU runs as uid and gid {vmuser.describe_range()}, no capability, "
              "in a root of its own")
    taken = vmuser.host_accounts_in_range()
    if taken:
        return Check("qemu user", "warn", f"{detail}; but these accounts share the range and "
                     f"could signal a QEMU: {', '.join(taken[:3])}")
    return Check("qemu user", "ok", detail)


def _status_field(status: str, name: str) -> str:
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def check_qboot(path: Path) -> Check:
    if path.is_file():
        return Check("qboot", "ok", f"{path} (fast firmware for -M pc/q35)")
    return Check("qboot", "warn", f"{path} missing: pass another firmware (SeaBIOS boots slower)")


def check_guest_assets(cache_dir: Path | None
                       ) -> tuple[list[Check], tuple[Path, str] | None, Path | None]:
    """Kernel and floor initrd checks, plus (vmlinuz, release) and the initrd when present."""
    from cocoon.guest import assets  # apt tooling, only when checking

    checks: list[Check] = []
    kernel: tuple[Path, str] | None = None
    initrd: Path | None = None
    try:
        found = assets.ensure_kernel(cache_dir)
        kernel = (found.vmlinuz, found.release)
        checks.append(Check("guest kernel", "ok",
                            f"{found.release} (package {found.package_version}) {found.vmlinuz}"))
    except CocoonError as err:
        checks.append(Check("guest kernel", "fail", f"not available and cannot be fetched: {err}"))
    checks.extend(check_custom_kernel())
    if kernel is not None:
        try:
            initrd = assets.ensure_floor_initrd(cache_dir)
            checks.append(Check("floor initrd", "ok", str(initrd)))
        except CocoonError as err:
            checks.append(Check("floor initrd", "warn",
                                f"cannot build it, so acceleration is not probed: {err}"))
    return checks, kernel, initrd


def check_custom_kernel() -> list[Check]:
    """The kernel hypervisor.kernel names, when it names one: readable, its release, and
    its module tree matching it. (Acceleration is still probed with Debian's kernel.)"""
    from cocoon.config import current as settings
    from cocoon.guest import assets

    hypervisor = settings().hypervisor
    if hypervisor.kernel is None:
        return []
    try:
        custom = assets.custom_kernel(hypervisor.kernel, hypervisor.kernel_modules,
                                      identify=False)
    except CocoonError as err:
        return [Check("custom kernel", "fail", str(err))]
    modules = str(custom.modules_dir) if custom.modules_dir else "none (drivers built in)"
    return [Check("custom kernel", "ok", f"{custom.release} {custom.vmlinuz}, modules "
                                          f"{modules}")]


def acceleration_checks(decision: accel.AccelDecision | None,
                        device: tuple[bool, str]) -> list[Check]:
    """The KVM line and the chosen-acceleration line; `device` is `accel.kvm_device()`."""
    if decision is None:
        detail = "not probed (needs QEMU, a guest kernel and the floor initrd)"
        kvm = Check("kvm", "warn", device[1] if not device[0] else f"{device[1]}; {detail}")
        return [kvm, Check("acceleration", "fail", detail)]
    if decision.accel == "kvm":
        kvm = Check("kvm", "ok", decision.kvm_detail)
    else:
        kvm = Check("kvm", "warn", f"not used: {decision.kvm_detail}")
    parts = [f"{decision.accel} (cpu {decision.cpu_model})"]
    if decision.boot_seconds is not None:
        parts.append(f"probe boot {decision.boot_seconds:.2f} s")
    if decision.source == "cache" and decision.probed_at is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(decision.probed_at))
        parts.append(f"probed {stamp}, cached")
    elif decision.source == "env":
        parts.append(f"{decision.reason.replace('set by', 'forced by', 1)}, not probed")
    if decision.source == "probe":
        parts.append("probed now")
    verdict: Verdict = "ok" if decision.verified or decision.source == "env" else "fail"
    return [kvm, Check("acceleration", verdict, "; ".join(parts))]


def check_virtiofsd(path: Path) -> Check:
    if not os.access(path, os.X_OK):
        return Check("virtiofsd", "warn", f"{path} missing: no host directories in VMs")
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return Check("virtiofsd", "warn", f"{path} does not run: {err}")
    first = out.splitlines()[0] if out.strip() else "version unknown"
    return Check("virtiofsd", "ok", f"{first} ({path})")


def check_tun(path: Path) -> Check:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return Check("tun", "warn", f"cannot open {path}: {err.strerror}; only --net=none")
    os.close(fd)
    return Check("tun", "ok", f"{path} opens")


def check_netns() -> Check:
    unshare = shutil.which("unshare")
    if unshare is None:
        return Check("netns", "warn", "cannot test: unshare(1) not found")
    try:
        result = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return Check("netns", "warn", f"unshare --net failed: {err}")
    if result.returncode != 0:
        return Check("netns", "warn", f"cannot create a network namespace: "
                     f"{result.stderr.strip() or result.returncode}")
    return Check("netns", "ok", "a network namespace can be created")


def check_cgroups(mounts: str) -> Check:
    """From /proc/self/mounts: v2, v1 or hybrid. Container limits live in the guest, so any is
    fine; the host's cgroups only account for QEMU itself."""
    v2: list[str] = []
    v1: list[str] = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            v2.append(fields[1])
        elif fields[2] == "cgroup":
            v1.append(fields[1].rsplit("/", 1)[-1])
    if v2 and v1:
        return Check("cgroups", "ok", f"hybrid: v1 ({', '.join(sorted(v1))}) and v2 at "
                     f"{', '.join(v2)}")
    if v2:
        return Check("cgroups", "ok", f"v2 (unified) at {', '.join(v2)}")
    if v1:
        return Check("cgroups", "ok", f"v1: {', '.join(sorted(v1))}")
    return Check("cgroups", "warn", "no cgroup filesystem mounted: QEMU is not accounted")


def check_memory(meminfo: str) -> Check:
    """MemAvailable against what one default VM needs (guest RAM plus QEMU's own)."""
    available_kib: int | None = None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            available_kib = int(line.split()[1])
    if available_kib is None:
        return Check("memory", "warn", "MemAvailable not found in /proc/meminfo")
    mib = available_kib // 1024
    detail = f"{mib} MiB available; a {VM_MEMORY_MIB} MiB VM needs about {MIN_AVAILABLE_MIB} MiB"
    if mib < MIN_AVAILABLE_MIB:
        return Check("memory", "fail", detail)
    if mib < COMFORTABLE_AVAILABLE_MIB:
        return Check("memory", "warn", detail + " (room for one VM only)")
    return Check("memory", "ok", detail)


def check_vsock(path: Path) -> Check:
    if path.exists():
        return Check("vhost-vsock", "ok", f"{path} present")
    return Check("vhost-vsock", "ok", f"{path} absent: the agent channel uses virtio-serial")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
