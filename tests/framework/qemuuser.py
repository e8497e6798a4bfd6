"""Looking at a running QEMU the way a QEMU taken over would: from its mount namespace and
root, as its uid and gid, without a capability (nsenter, then setpriv), and its credentials as
the kernel reports them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cocoon.hypervisor.vmuser import qemu_ids

CAPABILITY_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def as_qemu(pid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` where and as QEMU `pid` runs."""
    status = proc_status(pid)
    uid, gid = status["Uid"].split()[0], status["Gid"].split()[0]
    return subprocess.run(
        ["nsenter", f"--target={pid}", "--mount", "--root", "--wd=/",
         "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         "--bounding-set=-all", "--inh-caps=-all", *command],
        capture_output=True, text=True, check=False)


def assert_runs_as_its_own_user(pid: int) -> None:
    """uid and gid (real, effective, saved, filesystem) are `qemu_ids(pid)`, no supplementary
    group, every capability set empty."""
    status = proc_status(pid)
    ids = [str(qemu_ids(pid))] * 4
    assert (status["Uid"].split(), status["Gid"].split(), status["Groups"]) == (ids, ids, ""), \
        status
    for caps in CAPABILITY_SETS:
        assert int(status[caps], 16) == 0, (caps, status[caps])


def assert_cannot_read(pid: int, *paths: str | Path) -> None:
    for path in paths:
        seen = as_qemu(pid, "/usr/bin/cat", str(path))
        assert seen.returncode != 0 and seen.stdout == "", (str(path), seen.stdout)
