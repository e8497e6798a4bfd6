"""Linux system calls that Python 3.11's `os` module lacks, through ctypes.

The guest agent and the host (mounts of the share, network namespaces, the per-process shim)
both use them. Each wrapper raises `OSError` with the errno and the object it acted on, so an
error reaching the host names the path or namespace at fault; callers speak in Python values.
"""

from __future__ import annotations

import ctypes
import os

# by soname: ctypes.util.find_library spawns helper processes (~0.1 s in a TCG guest)
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# clone / unshare / setns flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_FLAGS: dict[str, int] = {
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}
# the file under /proc/<pid>/ns for each OCI namespace type
NAMESPACE_FILES: dict[str, str] = {
    "mount": "mnt", "uts": "uts", "ipc": "ipc", "pid": "pid", "network": "net",
    "user": "user", "cgroup": "cgroup", "time": "time",
}

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2

# the new mount API (Linux 5.12): a detached copy of a tree whose propagation is set before it
# is attached anywhere
OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155
_SYS_FINIT_MODULE = 313
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_OPENAT2 = 437

# openat2 resolve flags (Linux 5.6)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else value


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {source or fstype} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}", target)


def open_tree_clone(path: str, recursive: bool) -> int:
    """A detached copy of the mount at `path` (with its submounts when `recursive`): an fd."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(_libc.syscall(_SYS_OPEN_TREE, ctypes.c_int(_AT_FDCWD), _b(path),
                                ctypes.c_uint(flags)), f"open_tree {path}", path)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat(2) with `resolve` constraints (RESOLVE_IN_ROOT: `dir_fd` is `/` for the walk,
    RESOLVE_BENEATH: climbing out of it fails with EXDEV). O_CLOEXEC is always added."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), _b(path),
                                ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))),
                  f"open {path}", path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def set_propagation(fd: int, propagation: int) -> None:
    """Set the propagation of the mount `fd` refers to (attached or not); MS_REC in
    `propagation` applies it to every mount beneath too."""
    attr = _MountAttr(0, 0, propagation & ~MS_REC, 0)
    flags = _AT_EMPTY_PATH | (AT_RECURSIVE if propagation & MS_REC else 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(flags),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr({fd}, propagation {propagation:#x})")


def set_readonly(fd: int) -> None:
    """Make the mount `fd` refers to (not those beneath it) read-only."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(_AT_EMPTY_PATH),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr({fd}, read-only)")


def move_mount(fd: int, target: str, target_fd: int | None = None) -> None:
    """Attach the (detached) mount `fd` refers to at `target`, or, given `target_fd` (an
    O_PATH descriptor opened safely beforehand), exactly there: `target` only names it."""
    if target_fd is None:
        to_fd, to_path, flags = _AT_FDCWD, _b(target), _MOVE_MOUNT_F_EMPTY_PATH
    else:
        to_fd, to_path, flags = target_fd, b"", \
            _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH
    _check(_libc.syscall(_SYS_MOVE_MOUNT, ctypes.c_int(fd), b"", ctypes.c_int(to_fd),
                         to_path, ctypes.c_uint(flags)),
           f"move_mount onto {target}", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({fd})")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)),
           f"pivot_root {new_root}", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname {name!r}")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, ctypes.c_size_t(len(raw))), f"setdomainname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


def finit_module(fd: int, params: str = "", flags: int = 0, path: str | None = None) -> None:
    _check(_libc.syscall(_SYS_FINIT_MODULE, ctypes.c_int(fd), _b(params), ctypes.c_int(flags)),
           f"load module {path or fd}", path)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets (64-bit masks)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i, shift in enumerate((0, 32)):
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset")


def capget() -> tuple[int, int, int]:
    """Return the calling thread's (effective, permitted, inheritable) masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_SYS_CAPGET, ctypes.byref(header), ctypes.byref(data)), "capget")
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


_LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
_LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC


def power_off() -> None:
    """Power the machine off at once (QEMU then exits); the caller syncs first."""
    _check(_libc.syscall(169, ctypes.c_uint(_LINUX_REBOOT_MAGIC1),
                         ctypes.c_uint(_LINUX_REBOOT_MAGIC2),
                         ctypes.c_uint(LINUX_REBOOT_CMD_POWER_OFF), None), "reboot")
