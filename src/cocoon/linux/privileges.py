"""Giving up root's capabilities once a host process is set up (the monitor, the shims).

`confine(keep)` leaves the calling thread with the capabilities in `keep` and nothing else:
the bounding set cut to them (so no exec can grant more), the ambient and inheritable sets
emptied, effective and permitted set to them, and no_new_privs set (a setuid or file-capability
program it runs gains nothing). Capabilities are per thread: threads that exist already keep
theirs, so a caller confines itself before it starts any, or replaces those it has.

Only the standard library and ctypes (through `cocoon.linux.syscalls`): the per-process shim
imports this, and every MiB it imports is paid once per container process.
"""

from __future__ import annotations

from cocoon.linux import syscalls as sc
from cocoon.linux.caps import CAPABILITIES

STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def mask(names: tuple[str, ...]) -> int:
    """The bit mask of capabilities named as config.json names them (`CAP_SYS_ADMIN`)."""
    result = 0
    for name in names:
        result |= 1 << CAPABILITIES[name]
    return result


def names(value: int) -> list[str]:
    """The names of the capabilities in mask `value` (numbers for those without one)."""
    by_number = {number: name for name, number in CAPABILITIES.items()}
    return [by_number.get(n, str(n)) for n in range(64) if value & (1 << n)]


def confine(keep: int) -> None:
    """Keep only the capabilities in mask `keep` (see the module's docstring); an
    unprivileged caller holds none to drop and is left as it is, but for no_new_privs."""
    effective, permitted, _ = sc.capget()
    if permitted:
        top = last_cap()
        # the bounding set first: dropping from it needs CAP_SETPCAP, which goes next
        if effective & (1 << CAPABILITIES["CAP_SETPCAP"]):
            for number in range(top + 1):
                if not keep & (1 << number):
                    sc.prctl(sc.PR_CAPBSET_DROP, number)
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
        kept = keep & permitted
        sc.capset(kept, kept, 0)
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def status_of(pid: int | str, tid: int | str | None = None) -> dict[str, int]:
    """The capability masks and no_new_privs of a process (or one of its threads) from /proc."""
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    found: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                found[key] = int(value.strip(), 16)
            elif key == "NoNewPrivs":
                found[key] = int(value.strip())
    return found
