"""QEMU's own user: a uid and gid per VM, from a range nobody else uses (Firecracker's jailer
takes one per microVM; Kata's rootless mode one per sandbox).

The ids are `QEMU_ID_BASE` + the QEMU process's pid, as uid and gid alike: unique among live
processes without any allocation, lock or account to create, and, since a pid is below
`PID_MAX_LIMIT` (2**22), inside 0x7C000000-0x7C3FFFFF, a block of the range systemd's
"UIDS-GIDS" leaves unused (0x70000000-0x7FFFFFFF: above the container uid ranges, below the
ids that break on signed 32-bit arithmetic). Two QEMUs never share a uid, so one taken over
cannot signal, trace or read `/proc/<pid>` of another; with no supplementary group and no
passwd entry it owns nothing on the host but what is handed to it.

A user namespace that does not map the range makes it unusable: QEMU then refuses to start
(`mapping_problem`) rather than run with less containment than documented. Accounts whose ids
lie in the range weaken it (their processes could signal a QEMU): `cocoon check` warns of
them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from collections.abc import Callable, Sequence
from pathlib import Path

QEMU_ID_BASE = 0x7C000000
PID_MAX_LIMIT = 1 << 22  # the kernel's bound on pid_max on 64-bit hosts
QEMU_ID_LAST = QEMU_ID_BASE + PID_MAX_LIMIT - 1


def qemu_ids(pid: int) -> int:
    """The uid (and gid) of the QEMU whose process id is `pid`."""
    if not 0 < pid < PID_MAX_LIMIT:
        raise ValueError(f"pid {pid} outside 1..{PID_MAX_LIMIT - 1}")
    return QEMU_ID_BASE + pid


def describe_range() -> str:
    return f"{QEMU_ID_BASE}+pid ({QEMU_ID_BASE:#x}-{QEMU_ID_LAST:#x})"


def unmapped(id_map: str) -> bool:
    """True when a /proc/<pid>/uid_map (or gid_map) text does not map the whole range into
    this namespace (ids outside it cannot be taken by setresuid)."""
    for line in id_map.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        inside, count = int(fields[0]), int(fields[2])
        if inside <= QEMU_ID_BASE and inside + count > QEMU_ID_LAST:
            return False
    return True


def accounts_in_range(users: list[tuple[str, int]], groups: list[tuple[str, int]]) -> list[str]:
    """The host's users and groups whose ids fall in QEMU's range (they could signal a QEMU
    or own files it could write)."""
    found = [f"user {name} ({uid})" for name, uid in users
             if QEMU_ID_BASE <= uid <= QEMU_ID_LAST]
    found += [f"group {name} ({gid})" for name, gid in groups
              if QEMU_ID_BASE <= gid <= QEMU_ID_LAST]
    return found


def mapping_problem() -> str | None:
    """Why no QEMU can take its ids here (a user namespace that does not map the range), or
    None. Cheap: QEMU's start checks it each time and refuses to start on it."""
    for name in ("uid_map", "gid_map"):
        try:
            text = Path(f"/proc/self/{name}").read_text()
        except OSError:
            continue  # no user namespaces: every id is the host's own
        if unmapped(text):
            return (f"QEMU's ids {describe_range()} are not mapped in this user namespace "
                    f"(/proc/self/{name}: {' '.join(text.split()) or 'empty'})")
    return None


def host_accounts_in_range() -> list[str]:
    """`accounts_in_range` for this host's account databases (blocking: NSS may ask a
    directory server, so only `cocoon check` asks)."""
    return accounts_in_range([(p.pw_name, p.pw_uid) for p in pwd.getpwall()],
                             [(g.gr_name, g.gr_gid) for g in grp.getgrall()])


def runs_as_own_user() -> bool:
    """Whether QEMUs started by this process get a user of their own: only root can give it
    (an unprivileged caller's QEMU runs as the caller)."""
    return os.geteuid() == 0


def hand_over(directories: Sequence[Path], sockets: Sequence[Path],
              files: Sequence[int]) -> Callable[[int], None]:
    """A preexec step (as root, before QEMU's root is built): make QEMU's user the owner of
    the directories it creates its sockets and pidfile in, of the sockets of others it
    connects to (virtiofsd's) and of the files it writes by name, given as descriptors the
    caller opened without following links (its console log, a template's RAM file).
    Directories and sockets are changed without following a link either: a directory a
    previous QEMU of the sandbox owned may hold anything."""

    def give(ids: int) -> None:
        for path in (*directories, *sockets):
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, ids, ids, follow_symlinks=False)
        for fd in files:
            os.fchown(fd, ids, ids)

    return give
