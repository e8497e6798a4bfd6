"""The rate of the host's TSC, for guests that have no clock to calibrate theirs against.

Under TCG a guest's `rdtsc` reads the host's TSC (QEMU's `cpu_get_host_ticks`), so the guest's
TSC runs at the host's rate. On `pc` and `q35` the guest kernel calibrates it against the HPET
or the ACPI PM timer; `microvm` has neither (nor the speaker port the slow PIT method needs), so
the kernel's only path is the fast PIT calibration, which fails in about one boot in four under
TCG, after which the 6.1 kernel hangs before init. Handing it the rate (`tsc_early_khz`)
skips the calibration. Under KVM the guest uses kvm-clock and needs none of this.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def host_tsc_khz(cpuinfo: str | None = None) -> int | None:
    """The host's TSC rate in kHz from the first `cpu MHz` line, None when it has none.

    The x86 kernel reports the TSC's calibrated rate there when it has no cpufreq driver (a
    virtual machine, this kind of host); with one, the current frequency, which is close
    enough for a kernel that would otherwise not boot.
    """
    text = CPUINFO.read_text(errors="replace") if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                khz = round(float(value.strip()) * 1000)
            except ValueError:
                return None
            return khz if khz > 0 else None
    return None
