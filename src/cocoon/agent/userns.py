"""A container's user namespace, in the forked setup process, before its other namespaces.

runc's order: the process makes (or joins) the user namespace first, its uid and gid maps are
written, it becomes root in it, and only then are the other namespaces made, so that they are
owned by the user namespace and the container's root may mount, set its hostname and so on in
them. Ids are the guest's, which are the host's: virtiofsd passes file owners through unchanged,
so a rootfs file the host has owned by 100000 is root's in a container that maps 0 to 100000.
"""

from __future__ import annotations

import contextlib
import os

from cocoon.linux import syscalls as sc


def write_maps(pid: int, uid_map: str, gid_map: str) -> None:
    """Write the maps of `pid`'s new user namespace, each in the one write the kernel takes.

    /proc/<pid>/setgroups is left "allow", as runc leaves it when it runs as root (only a
    rootless runc writes "deny"): the process sets its additional groups later.
    """
    for name, text, field in (("uid_map", uid_map, "linux.uidMappings"),
                              ("gid_map", gid_map, "linux.gidMappings")):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        except OSError as err:
            lines = text.strip().replace("\n", "; ")
            raise OSError(err.errno, f"{field}: the guest kernel refused the mapping "
                                     f"({lines}): {err.strerror}") from err
        finally:
            os.close(fd)


def create(uid_map: str, gid_map: str) -> None:
    """unshare(CLONE_NEWUSER) and have the maps written, then become root in the namespace.

    A process cannot write more than its own id into the map of its own new namespace: the
    writer needs CAP_SETUID in the parent namespace. So a helper is forked first; it stays in
    the guest's namespace, writes the maps of this process once this process has unshared (as
    runc's parent does for its child) and exits; its error, if any, comes back on a pipe.
    """
    parent = os.getpid()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(err_r)
            if os.read(go_r, 1) == b"u":  # end of file: the parent could not unshare
                write_maps(parent, uid_map, gid_map)
            code = 0
        except OSError as err:
            with contextlib.suppress(OSError):
                os.write(err_w, (err.strerror or str(err)).encode())
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(err_w)
    try:
        try:
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(go_w, b"u")
        finally:
            os.close(go_w)
            os.waitpid(helper, 0)
            with os.fdopen(err_r, "rb") as errors:
                message = errors.read().decode(errors="replace")
    except OSError as err:
        raise OSError(err.errno, f"linux.namespaces: cannot make a user namespace: "
                                 f"{err.strerror}") from err
    if message:
        raise OSError(message)
    become_root()


def join(fd: int) -> None:
    """setns into the user namespace open at `fd` and become root in it."""
    sc.setns(fd, sc.CLONE_NEWUSER)
    become_root()


def become_root() -> None:
    """Root of the user namespace, with no additional groups (as runc's nsexec): files the setup
    makes in the rootfs are then the container root's, and its capabilities apply to them."""
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
