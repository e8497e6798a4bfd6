"""The forked side of starting a container process: namespaces, rootfs, identity, exec.

The agent is single-threaded and forks directly; the child runs only the code in this module and
then either execs the container's program or reports an error on the sync pipe and exits. The
sequence for a container's init process (runc's, adapted to a guest we own):

    agent --fork--> setup (joins the cgroup; sets rlimits, oom_score_adj and network sysctls
    while it is still privileged in the guest; joins other containers' namespaces; makes the
    user namespace, if any, and has it mapped (`userns`); unshares the rest) --fork--> init
    (PID 1 of the new or joined pid namespace; without one the setup process goes on itself):
    hostname, rootfs, pivot_root; with a terminal, opens a pty in the container's devpts and
    sends the master on the console socket; reports "ready"; waits on the start pipe; then
    user, capabilities, no_new_privs, seccomp, exec.

An exec'd process joins the init's namespaces with setns instead of unsharing them (the user
namespace last, as nsenter does for a privileged caller: the others are the guest root's to join
only while it is still outside). The sync pipe (close-on-exec) carries one JSON object per
line: {"pid": N} from the setup process (the process's pid as the agent sees it),
{"ready": true} from an init waiting for its start, or {"error": "..."}; end of file without an
error means the program was exec'd.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import signal
import socket
import termios
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cocoon.agent import caps, rootfs, seccomp_filter, userns
from cocoon.linux import syscalls as sc
from cocoon.oci import idmap
from cocoon.oci.spec import LinuxIDMapping

RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": resource.RLIMIT_CPU, "RLIMIT_FSIZE": resource.RLIMIT_FSIZE,
    "RLIMIT_DATA": resource.RLIMIT_DATA, "RLIMIT_STACK": resource.RLIMIT_STACK,
    "RLIMIT_CORE": resource.RLIMIT_CORE, "RLIMIT_RSS": resource.RLIMIT_RSS,
    "RLIMIT_NPROC": resource.RLIMIT_NPROC, "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK, "RLIMIT_AS": resource.RLIMIT_AS,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE, "RLIMIT_NICE": resource.RLIMIT_NICE,
    "RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO, "RLIMIT_RTTIME": resource.RLIMIT_RTTIME,
}

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ProcessPlan:
    """A container process, in plain values (converted from the OCI process by the caller)."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    umask: int | None = None
    terminal: bool = False
    rlimits: list[tuple[str, int, int]] = field(default_factory=list)
    capabilities: caps.CapabilitySets | None = None
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    seccomp: dict[str, Any] | None = None


@dataclass
class Stdio:
    """Descriptors the child puts on 0, 1 and 2, or for a terminal the console socket.

    With a terminal the child opens a pty in the container's devpts once it is inside the
    container's root, sends the master on `console` and uses the slave three times.
    """

    stdin: int
    stdout: int
    stderr: int
    close: Sequence[int] = ()  # the agent's ends, closed in the child
    console: int | None = None


@dataclass
class InitPlan:
    container_id: str
    cgroup_procs: str | None           # cgroup.procs file to join, or None
    namespaces: int                     # CLONE_NEW* flags to unshare
    join_namespaces: list[tuple[int, str]]  # (flag, /proc/.../ns path) to setns into first
    hostname: str | None
    domainname: str | None
    rootfs: rootfs.RootfsPlan
    process: ProcessPlan
    # a new user namespace's mappings (or, joined, the joined container's)
    uid_mappings: tuple[LinuxIDMapping, ...] = ()
    gid_mappings: tuple[LinuxIDMapping, ...] = ()

    @property
    def in_userns(self) -> bool:
        return bool(self.namespaces & sc.CLONE_NEWUSER) or any(
            flag == sc.CLONE_NEWUSER for flag, _ in self.join_namespaces)


def _report(fd: int, **message: Any) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def lookup_path(program: str, env: Sequence[str], cwd: str) -> str:
    """Find `program` as execvp would, using the container's PATH (runc checks this at create)."""
    if "/" in program:
        path = program if program.startswith("/") else os.path.join(cwd, program)
        if not os.path.exists(path):
            raise FileNotFoundError(f"executable {program!r} not found in the container's rootfs")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(f"{program!r} is not an executable file")
        return path
    search = DEFAULT_PATH
    for entry in env:
        if entry.startswith("PATH="):
            search = entry[5:]
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"executable {program!r} not found in $PATH ({search})")


def open_console(stdio: Stdio, bind_console: bool) -> Stdio:
    """Open the process's terminal inside the container (as runc does) and send the master.

    Called with the container's root as "/": the pty comes from the container's own devpts
    instance (through /dev/ptmx), so the process sees /dev/pts/N; an init's slave is also bound
    onto /dev/console (an exec's is not: it shares the init's mounts). Returns the stdio to
    install: the slave three times.
    """
    assert stdio.console is not None
    try:
        master, slave = os.openpty()
    except OSError as err:
        raise OSError(err.errno, "process.terminal: cannot open a pty in the container "
                                 f"(is devpts mounted on /dev/pts?): {err.strerror}",
                      "/dev/ptmx") from err
    if bind_console and os.path.exists("/dev/console"):
        sc.mount(os.ttyname(slave), "/dev/console", None, sc.MS_BIND)
    with socket.socket(fileno=stdio.console) as channel:
        socket.send_fds(channel, [b"pty"], [master])
    os.close(master)
    return Stdio(slave, slave, slave, close=stdio.close)


def _set_stdio(stdio: Stdio, terminal: bool, bind_console: bool = False) -> None:
    for fd in stdio.close:
        with contextlib.suppress(OSError):
            os.close(fd)
    if terminal and stdio.console is not None:
        stdio = open_console(stdio, bind_console)
    os.setsid()  # every container process leads its own session, as under runc
    if terminal:
        fcntl.ioctl(stdio.stdin, termios.TIOCSCTTY, 0)
    for target, fd in ((0, stdio.stdin), (1, stdio.stdout), (2, stdio.stderr)):
        if fd != target:
            os.dup2(fd, target, inheritable=True)
    for fd in {stdio.stdin, stdio.stdout, stdio.stderr}:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_limits(process: ProcessPlan) -> None:
    """rlimits and oom_score_adj, set while the process is still the guest's root: in a user
    namespace it could no longer raise them (runc sets them from its parent for that reason)."""
    for name, soft, hard in process.rlimits:
        resource.setrlimit(RLIMITS[name], (soft, hard))
    if process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))


def _join(namespaces: Sequence[tuple[int, str]]) -> None:
    """setns into each namespace; a user namespace last (see the module). Every file is opened
    first: a joined mount namespace changes what the /proc paths name."""
    own_user = os.stat("/proc/self/ns/user")
    opened = [(flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)) for flag, path in namespaces]
    try:
        for flag, fd in opened:
            if flag != sc.CLONE_NEWUSER:
                sc.setns(fd, flag)
        for flag, fd in opened:
            if flag == sc.CLONE_NEWUSER and not _same_file(fd, own_user):
                userns.join(fd)
    finally:
        for _, fd in opened:
            os.close(fd)


def _same_file(fd: int, other: os.stat_result) -> bool:
    """Whether `fd` is the namespace `other` describes (joining its own user namespace is an
    error: another container's may be the guest's own)."""
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (other.st_dev, other.st_ino)


def _become(process: ProcessPlan, seccomp: Any = None) -> Any:
    """Identity and limits, in runc's order; returns the seccomp filter still to be loaded just
    before exec (None when it is loaded here already). The caller then execs.

    As runc: without no_new_privs the filter is loaded now, while the process still holds
    CAP_SYS_ADMIN (the kernel's condition for a filter without no_new_privs), and the flag stays
    unset; with no_new_privs it is set and the filter loaded last, just before exec."""
    if seccomp is not None and not process.no_new_privileges:
        seccomp.load()
        seccomp = None
    if process.capabilities is not None:
        caps.drop_bounding(process.capabilities)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setgroups(process.additional_gids)
    os.setresgid(process.gid, process.gid, process.gid)
    os.setresuid(process.uid, process.uid, process.uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    if process.umask is not None:
        os.umask(process.umask)
    if process.capabilities is not None:
        caps.apply(process.capabilities)
    if process.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    return seccomp


def _environment(process: ProcessPlan) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in process.env:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def _prepare_seccomp(process: ProcessPlan) -> Any:
    """Build the filter while the agent's root (and its libseccomp) is still visible.

    After pivot_root the container's rootfs is all there is; the filter is loaded just before
    exec. Building it early also reports a bad profile at create, not at start.
    """
    return None if process.seccomp is None else seccomp_filter.build(process.seccomp)


def _exec(process: ProcessPlan, program: str, seccomp: Any = None) -> NoReturn:
    env = _environment(process)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in range(1, signal.NSIG):
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_DFL)
    if seccomp is not None:
        seccomp.load()
    os.execve(program, process.args, env)


def _check_cwd(cwd: str) -> None:
    if not os.path.isdir(cwd):
        raise FileNotFoundError(f"process.cwd {cwd!r} does not exist in the container's rootfs")


def describe(err: BaseException) -> str:
    """One line for the host: what failed and the path at fault, without Python's decoration."""
    if isinstance(err, OSError):
        message = err.strerror or str(err)
        if err.filename and str(err.filename) not in message:
            message = f"{message}: {err.filename}"
        return message
    if isinstance(err, ValueError):
        return str(err)
    where = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    place = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"internal error {type(err).__name__}: {err}{place}"


def _fail(sync_fd: int, err: BaseException) -> NoReturn:
    with contextlib.suppress(OSError):
        _report(sync_fd, error=describe(err).replace("\n", " "))
    os._exit(127)


def run_init(plan: InitPlan, stdio: Stdio, sync_fd: int, start_fd: int) -> NoReturn:
    """Body of the forked setup process for a container's init. Never returns."""
    try:
        if plan.cgroup_procs:
            with open(plan.cgroup_procs, "w") as f:
                f.write(str(os.getpid()))
        _set_limits(plan.process)
        if plan.in_userns:
            # the guest's network is the container's, but not its user namespace's to change
            network = {k: v for k, v in plan.rootfs.sysctl.items() if k.startswith("net.")}
            rootfs.set_sysctl(network)
            plan.rootfs.sysctl = {k: v for k, v in plan.rootfs.sysctl.items()
                                  if k not in network}
            plan.rootfs.userns = True
        _join(plan.join_namespaces)
        if plan.namespaces & sc.CLONE_NEWUSER:
            userns.create(idmap.map_text(plan.uid_mappings), idmap.map_text(plan.gid_mappings))
        sc.unshare(plan.namespaces & ~sc.CLONE_NEWUSER)
        joined_pid = any(flag == sc.CLONE_NEWPID for flag, _ in plan.join_namespaces)
        if plan.namespaces & sc.CLONE_NEWPID or joined_pid:
            # a new (or joined) pid namespace takes effect for children only
            child = os.fork()
            if child:
                _report(sync_fd, pid=child)
                os._exit(0)
        else:
            _report(sync_fd, pid=os.getpid())
        # as runc: the spec's names are set in the container's uts namespace, new or joined
        own_uts = bool(plan.namespaces & sc.CLONE_NEWUTS) or any(
            flag == sc.CLONE_NEWUTS for flag, _ in plan.join_namespaces)
        if plan.hostname is not None and own_uts:
            sc.sethostname(plan.hostname)
        if plan.domainname is not None and own_uts:
            sc.setdomainname(plan.domainname)
        seccomp = _prepare_seccomp(plan.process)
        rootfs.prepare(plan.rootfs)
        process = plan.process
        _check_cwd(process.cwd)
        os.chdir(process.cwd)
        program = lookup_path(process.args[0], process.env, process.cwd)
        _set_stdio(stdio, process.terminal, bind_console=True)
        _report(sync_fd, ready=True)
        go = os.read(start_fd, 1)
        if go != b"s":
            os._exit(128 + signal.SIGKILL)  # the container was deleted before it started
        os.close(start_fd)
        seccomp = _become(process, seccomp)
        _exec(process, program, seccomp)  # success closes the sync pipe (close-on-exec)
    except BaseException as err:
        _fail(sync_fd, err)


@dataclass
class ExecPlan:
    init_pid: int
    cgroup_procs: str | None
    namespaces: list[tuple[int, str]]  # (flag, /proc/<init>/ns/<x>) in join order
    process: ProcessPlan


def run_exec(plan: ExecPlan, stdio: Stdio, sync_fd: int) -> NoReturn:
    """Body of the forked process for an exec in a running container. Never returns."""
    try:
        seccomp = _prepare_seccomp(plan.process)
        if plan.cgroup_procs:
            with open(plan.cgroup_procs, "w") as f:
                f.write(str(os.getpid()))
        _set_limits(plan.process)
        root_fd = os.open(f"/proc/{plan.init_pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        _join(plan.namespaces)
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        if any(flag == sc.CLONE_NEWPID for flag, _ in plan.namespaces):
            child = os.fork()
            if child:
                _report(sync_fd, pid=child)
                os._exit(0)
        else:
            _report(sync_fd, pid=os.getpid())
        process = plan.process
        _check_cwd(process.cwd)
        os.chdir(process.cwd)
        program = lookup_path(process.args[0], process.env, process.cwd)
        _set_stdio(stdio, process.terminal)
        seccomp = _become(process, seccomp)
        _exec(process, program, seccomp)  # success closes the sync pipe (close-on-exec)
    except BaseException as err:
        _fail(sync_fd, err)
