"""User namespace mappings (`linux.uidMappings`, `linux.gidMappings`): checked and written.

Pure functions, shared by the host (which refuses a bad config before a VM starts) and the
agent (which writes the maps). The rules are the kernel's for /proc/<pid>/uid_map (see
user_namespaces(7)): at most 340 lines, no range of zero ids, no range that runs past the
largest id (4294967294: (uid_t)-1 is never an id), and no two ranges that overlap on either
side. The same checks as runc's: mappings need a user namespace, a new user namespace needs both
mappings, and the process's user and groups must be mapped (or setuid fails in the guest).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from cocoon.oci.spec import LinuxIDMapping, Spec

MAX_EXTENTS = 340       # UID_GID_MAP_MAX_EXTENTS
LAST_ID = 2**32 - 2     # (uid_t)-1 means "no id"


def check_mappings(field: str, mappings: Sequence[LinuxIDMapping]) -> None:
    """ValueError naming `field` (e.g. "linux.uidMappings") if the kernel would refuse them."""
    if len(mappings) > MAX_EXTENTS:
        raise ValueError(f"{field}: {len(mappings)} mappings, the kernel takes at most "
                         f"{MAX_EXTENTS}")
    for index, m in enumerate(mappings):
        where = f"{field}[{index}]"
        if m.size == 0:
            raise ValueError(f"{where}: size is 0 (a mapping maps at least one id)")
        for side, start in (("containerID", m.container_id), ("hostID", m.host_id)):
            if start + m.size - 1 > LAST_ID:
                raise ValueError(f"{where}: {side} {start} + size {m.size} runs past the "
                                 f"largest id {LAST_ID}")
    for side in ("containerID", "hostID"):
        ranges = sorted((m.container_id if side == "containerID" else m.host_id, m.size, i)
                        for i, m in enumerate(mappings))
        for (start, size, first), (next_start, _, second) in itertools.pairwise(ranges):
            if start + size > next_start:
                a, b = sorted((first, second))
                raise ValueError(f"{field}[{b}]: its {side} range overlaps that of "
                                 f"{field}[{a}]")


def is_mapped(mappings: Iterable[LinuxIDMapping], container_id: int) -> bool:
    return any(m.container_id <= container_id < m.container_id + m.size for m in mappings)


def map_text(mappings: Iterable[LinuxIDMapping]) -> str:
    """The content of a uid_map or gid_map file, written in one write."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def check_user_namespace(spec: Spec) -> None:
    """ValueError (naming the field) if the spec's user namespace cannot be set up as stated.

    A user namespace joined by path takes that namespace's mappings: the config's, if any, are
    then not checked against them here (the agent does, against the joined container's)."""
    linux = spec.linux
    if linux is None:
        return
    user = next((ns for ns in linux.namespaces if ns.type == "user"), None)
    mapped = bool(linux.uid_mappings or linux.gid_mappings)
    if user is None:
        if mapped:
            raise ValueError("linux.uidMappings: mappings need a user namespace (linux."
                             "namespaces has no entry of type user)")
        return
    if user.path:
        return
    if not linux.uid_mappings or not linux.gid_mappings:
        missing = "uidMappings" if not linux.uid_mappings else "gidMappings"
        raise ValueError(f"linux.{missing}: a new user namespace needs both uid and gid "
                         "mappings")
    check_mappings("linux.uidMappings", linux.uid_mappings)
    check_mappings("linux.gidMappings", linux.gid_mappings)
    if spec.process is None:
        return
    user_ids = spec.process.user
    if not is_mapped(linux.uid_mappings, user_ids.uid):
        raise ValueError(f"process.user.uid: {user_ids.uid} is not mapped by "
                         "linux.uidMappings")
    for field, gid in (("gid", user_ids.gid),
                       *(("additionalGids", g) for g in user_ids.additional_gids)):
        if not is_mapped(linux.gid_mappings, gid):
            raise ValueError(f"process.user.{field}: {gid} is not mapped by "
                             "linux.gidMappings")
