"""Boot a throw-away VM to learn whether an accelerator really works on this host.

`/dev/kvm` opening proves little: under some nested or paravirtual hypervisors QEMU aborts while
setting up the vCPU, or the guest hangs before its first console line. The only sound test is
the real thing: boot the same kernel with the floor initrd (a busybox init that prints a marker
and powers off) and wait, with a bound, for the marker on the console.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cocoon.errors import HypervisorError, VMDiedError
from cocoon.hypervisor.config import Accel, VMConfig
from cocoon.hypervisor.qemu import QemuVM, console_tail, describe_exit

logger = logging.getLogger("cocoon.hypervisor.probe")

FLOOR_MARKER = "COCOON-FLOOR-OK"
PROBE_TIMEOUT = 10.0
_POLL = 0.02
LABELS: dict[str, str] = {"kvm": "KVM", "tcg": "TCG"}


@dataclass(frozen=True)
class ProbeResult:
    """What one probe boot showed; `seconds` runs from QEMU's spawn to the marker (or failure)."""

    accel: Accel
    cpu_model: str
    booted: bool
    seconds: float
    detail: str


async def probe_boot(accel: Accel, *, kernel: Path, initrd: Path, cpu_model: str | None = None,
                     marker: str = FLOOR_MARKER, timeout: float = PROBE_TIMEOUT,
                     qemu_binary: str = "qemu-system-x86_64",
                     name: str | None = None) -> ProbeResult:
    """Boot `kernel` + `initrd` under `accel` and report whether `marker` appeared in time.

    Never raises for a guest or QEMU failure: that is the answer, returned in `detail`. The VM
    (named `probe-<accel>-<pid>` unless `name` is given) and its temporary directory are gone
    when this returns.
    """
    label = LABELS[accel]
    with tempfile.TemporaryDirectory(prefix=f"cocoon-probe-{accel}-") as tmp:
        config = VMConfig(name=name or f"probe-{accel}-{os.getpid()}", kernel=kernel,
                          initrd=initrd, accel=accel, cpu_model=cpu_model,
                          qmp_socket=Path(tmp) / "qmp.sock",
                          console_log=Path(tmp) / "console.log", qemu_binary=qemu_binary)
        vm = QemuVM(config, warn_on_death=False)
        try:
            await vm.start(timeout)
            seconds = await _wait_for_marker(vm, marker, timeout)
            if seconds is None:
                result = ProbeResult(accel, config.cpu, False, vm.elapsed(),
                                     f"{label} probe VM did not boot within {timeout:g} s")
            else:
                result = ProbeResult(accel, config.cpu, True, seconds,
                                     f"{label} probe VM booted in {seconds:.2f} s")
        except VMDiedError as err:
            result = ProbeResult(accel, config.cpu, False, vm.elapsed(),
                                 f"{label} probe VM: QEMU exited "
                                 f"{describe_exit(err.evidence.get('exit_code'))} before the "
                                 f"guest booted: {_telling_line(config.console_log)}")
        except HypervisorError as err:
            result = ProbeResult(accel, config.cpu, False, vm.elapsed(),
                                 f"{label} probe VM failed: {err}")
        finally:
            await vm.stop()
    logger.info("probe %s (cpu %s): %s", accel, result.cpu_model, result.detail)
    return result


async def _wait_for_marker(vm: QemuVM, marker: str, timeout: float) -> float | None:
    """Seconds from spawn to the marker; None at the deadline; VMDiedError if QEMU exits first."""
    log = vm.config.console_log
    while True:
        if _contains(log, marker):
            return vm.elapsed()
        if not vm.running:
            if _contains(log, marker):  # printed just before the power-off we noticed
                return vm.elapsed()
            await vm.wait()
            raise VMDiedError(f"QEMU exited {describe_exit(vm.returncode)} before {marker!r}",
                              exit_code=vm.returncode, console_tail=vm.console_tail())
        if vm.elapsed() >= timeout:
            return None
        await asyncio.sleep(_POLL)


def _contains(path: Path, marker: str) -> bool:
    try:
        return marker.encode() in path.read_bytes()
    except OSError:
        return False


def _telling_line(log: Path) -> str:
    """QEMU's own error line if it wrote one, else the console's last line."""
    tail = console_tail(log)
    for line in tail:
        if "error" in line.lower():
            return line
    return tail[-1] if tail else "(console log empty)"
