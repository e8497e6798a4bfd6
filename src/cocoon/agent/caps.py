"""Capability masks and the order in which a process's five capability sets are applied.

The order follows runc: drop from the bounding set first (needs CAP_SETPCAP, so before anything
is dropped from the effective set), switch user with keep-caps on, then set effective, permitted
and inheritable together, then raise the ambient set (which needs each capability in both
permitted and inheritable).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from cocoon.linux import syscalls
from cocoon.linux.caps import CAPABILITIES


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read().strip())
    except OSError:
        return max(CAPABILITIES.values())


def mask(names: Iterable[str], limit: int | None = None) -> int:
    """A bit mask from capability names; names the kernel does not know are skipped (as runc)."""
    top = last_cap() if limit is None else limit
    result = 0
    for name in names:
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        number = CAPABILITIES.get(key)
        if number is not None and number <= top:
            result |= 1 << number
    return result


@dataclass(frozen=True)
class CapabilitySets:
    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int

    @classmethod
    def from_names(cls, bounding: Iterable[str], effective: Iterable[str],
                   permitted: Iterable[str], inheritable: Iterable[str],
                   ambient: Iterable[str]) -> CapabilitySets:
        top = last_cap()
        return cls(mask(bounding, top), mask(effective, top), mask(permitted, top),
                   mask(inheritable, top), mask(ambient, top))


def drop_bounding(sets: CapabilitySets) -> None:
    """Drop every capability outside the bounding set (before the user switch)."""
    for number in range(last_cap() + 1):
        if not sets.bounding & (1 << number):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, number)


def apply(sets: CapabilitySets) -> None:
    """Set effective, permitted and inheritable, then the ambient set (after the user switch).

    The kernel refuses to raise an ambient capability that is not both permitted and
    inheritable (EPERM). runc raises what it can and ignores those refusals (its capability
    package never reported them), and configs rely on that: buildah's ask for ambient
    capabilities with no inheritable set. So does Cocoon.
    """
    syscalls.capset(sets.effective, sets.permitted, sets.inheritable)
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    for number in range(last_cap() + 1):
        if sets.ambient & (1 << number):
            try:
                syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, number)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EINVAL):
                    raise
