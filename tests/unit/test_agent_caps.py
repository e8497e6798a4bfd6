"""Capability names to masks, and the five sets applied for real in a forked child."""

from __future__ import annotations

import json
import os
import re

from cocoon.agent import caps
from cocoon.linux import syscalls as sc
from cocoon.linux.caps import CAPABILITIES


def test_numbers_follow_the_kernel() -> None:
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_AUDIT_WRITE"] == 29
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40


def test_mask_accepts_short_and_lower_case_names_and_skips_unknown() -> None:
    assert caps.mask(["CAP_CHOWN", "net_raw", "cap_kill", "CAP_NO_SUCH"], limit=40) == \
        (1 << 0) | (1 << 13) | (1 << 5)


def test_mask_skips_what_the_kernel_does_not_know() -> None:
    assert caps.mask(["CAP_CHECKPOINT_RESTORE", "CAP_BPF"], limit=38) == 0


def _status_in_child(sets: caps.CapabilitySets, uid: int) -> dict[str, int]:
    """Apply `sets` in a forked child as the agent does around a user switch; read status."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            caps.drop_bounding(sets)
            sc.prctl(sc.PR_SET_KEEPCAPS, 1)
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            sc.prctl(sc.PR_SET_KEEPCAPS, 0)
            caps.apply(sets)
            with open("/proc/self/status") as f:
                found = {k: int(v, 16) for k, v in
                         re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", f.read(), re.MULTILINE)}
            os.write(write_fd, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 4096):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    result: dict[str, int] = json.loads(data)
    return result


def test_sets_are_applied_in_an_order_that_works_for_a_non_root_user() -> None:
    names = ["CAP_CHOWN", "CAP_NET_RAW"]
    sets = caps.CapabilitySets.from_names([*names, "CAP_SYS_ADMIN"], names, names, names,
                                          ["CAP_NET_RAW"])
    status = _status_in_child(sets, uid=4242)
    assert status["CapBnd"] == (1 << 0) | (1 << 13) | (1 << 21)
    assert status["CapEff"] == status["CapPrm"] == (1 << 0) | (1 << 13)
    assert status["CapInh"] == (1 << 0) | (1 << 13)
    assert status["CapAmb"] == 1 << 13
