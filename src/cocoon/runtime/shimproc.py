"""The per-process shim's own program: the host pid an engine waits on for one guest process.

    python -I -m cocoon.runtime.shimproc --socket MONITOR_SHIM_SOCKET --container ID
        --rootfs PATH [--exec EXEC_ID] [--terminal] [--netns PATH|new] [--log FILE]
        [--report-fd FD]

`cocoon.runtime.shim.spawn` forks it off the CLI and execs this, so the shim holds only what
its job needs (the standard library and ctypes: a few MiB, where a fork of the CLI kept the
CLI's 19 MiB of imports). It hides the host's processes behind a placeholder, joins the
container's network namespace, gives up every capability (bounding set included, no_new_privs
set), hands its stdio to the sandbox monitor (which relays it to and
from the guest process: `cocoon.runtime.shimwire`), forwards every signal it receives, and
exits with the guest process's status. Once its attach is sent it says so on the report pipe
(`--report-fd`) its spawner waits on: before that, nobody else knows of it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import stat
import sys
import time

from cocoon.linux import privileges
from cocoon.linux import syscalls as sc
from cocoon.runtime import shimwire

TYPE_CHECKING = False  # mypy takes it as true; importing typing's would cost a MiB here
if TYPE_CHECKING:
    from typing import NoReturn

# no argparse, logging or typing at run time: each would add about a MiB to every shim
LOG_PATH = os.devnull


def log(level: str, message: str) -> None:
    """One line in the shim's log (the format of cocoon.log's text lines)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    with contextlib.suppress(OSError), open(LOG_PATH, "a") as f:
        f.write(f"{stamp} {level} cocoon.runtime.shimproc[{os.getpid()}]: {message}\n")

SLEEP = "/bin/sleep"
PLACEHOLDER_TITLE = "[the container runs in its VM: podman top CTR -o pid,args lists it]"
# signals a stand-in must not forward: they are about the stand-in itself
NOT_FORWARDED = {signal.SIGCHLD, signal.SIGWINCH, signal.SIGPIPE, signal.SIGURG,
                 signal.SIGKILL, signal.SIGSTOP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP}


def hide_host_processes(rootfs: str) -> None:
    """Give the shim a mount namespace that shows the container's files and one placeholder
    process, never the host's.

    Engines reach a container through the host pid they were given: podman top joins that pid's
    mount namespace and reads /proc; podman cp into or out of a running container joins it and
    copies from its root. The shim stands in for a guest process, so its mount namespace is
    rooted at the container's rootfs (its host directory, which the guest sees through the
    share), and its /proc belongs to a fresh pid namespace holding one sleeping placeholder
    (dying with the shim) whose command line says where the processes are. The host's tree,
    moved aside by pivot_root, lies under that /proc; the shim and the placeholder return to it
    through a descriptor held from before (the interpreter, the monitor's socket and
    /bin/sleep are the host's), while whoever joins the namespace starts at its root.
    """
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWPID)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    host_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _root_at(rootfs)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            _placeholder(host_root, ready_w)
        os.close(ready_w)
        try:
            mounted = os.read(ready_r, 1) == b"1"
        finally:
            os.close(ready_r)
        if not mounted:
            # the host's tree must not show through: an empty /proc rather than none
            sc.mount("tmpfs", "/proc", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                     "size=4k,mode=555")
        _return_to(host_root)
    finally:
        os.close(host_root)


def _root_at(rootfs: str) -> None:
    """Make `rootfs` the namespace's root, the old root moved to its /proc. A rootfs whose proc
    is missing gets one (the guest makes it anyway); one whose proc is not a directory gets an
    empty tmpfs as the namespace's root instead (the host's tree never shows through)."""
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    proc = os.path.join(rootfs, "proc")
    with contextlib.suppress(FileExistsError):
        os.mkdir(proc, 0o555)
    if not stat.S_ISDIR(os.lstat(proc).st_mode):
        log("WARNING", f"shim: {proc} is not a directory: an empty root instead")
        sc.mount("tmpfs", rootfs, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=16k,mode=755")
        os.mkdir(proc, 0o555)
    os.chdir(rootfs)
    sc.pivot_root(".", "proc")
    os.chdir("/")


def _placeholder(host_root: int, ready: int) -> NoReturn:
    """The child: /proc of the new pid namespace over the host's tree, then sleep forever."""
    mounted = b"0"
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            mounted = b"1"
        finally:
            os.write(ready, mounted)
        _return_to(host_root)
        privileges.confine(0)  # a sleeping placeholder needs nothing of root's
        os.closerange(3, 65536)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv(SLEEP, [PLACEHOLDER_TITLE, "infinity"])
    finally:
        os._exit(0)


def _return_to(host_root: int) -> None:
    """This process's root back to the host's tree (the namespace's root stays the rootfs)."""
    os.fchdir(host_root)
    os.chroot(".")
    os.chdir("/")


def open_netns(netns: str | None) -> int | None:
    """The namespace to join, opened now: once hide_host_processes' placeholder has mounted
    its /proc (a race with this process), a path like /proc/PID/ns/net no longer resolves."""
    if netns is None or netns == "new":
        return None
    return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)


def enter_netns(netns: str | None, fd: int | None) -> None:
    if netns == "new":
        sc.unshare(sc.CLONE_NEWNET)
        return
    if fd is None:
        return
    try:
        sc.setns(fd, sc.CLONE_NEWNET)
    finally:
        os.close(fd)


def exit_like(status: int) -> NoReturn:
    """Leave the process with `status`, by the same signal when it is 128 + a signal."""
    try:
        sig = status - 128
        if sig in {s.value for s in signal.Signals} and sig not in (
                signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)  # SIGKILL's cannot be set, nor needs to be
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
                # no core dump for a signal that would make one: the guest already did that
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.kill(os.getpid(), sig)
    finally:
        os._exit(status & 0xFF)


class Shim:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _send(self, message: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(shimwire.encode(message))

    def forward_signals(self, terminal: bool) -> None:
        for sig in signal.valid_signals():
            if sig in NOT_FORWARDED or not 0 < sig < 65:
                continue
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, lambda n, _: self._send({"signal": n}))
        if terminal:
            signal.signal(signal.SIGWINCH, lambda n, _: self._send({"resize": True}))

    def wait(self) -> int:
        """The exit status the monitor sends (LOST_STATUS if it never does)."""
        data = b""
        while b"\n" not in data and len(data) < shimwire.MAX_LINE:
            try:
                chunk = self.sock.recv(shimwire.MAX_LINE)
            except OSError as err:
                log("WARNING", f"shim: lost the monitor: {err}")
                return shimwire.LOST_STATUS
            if not chunk:
                log("WARNING", "shim: the monitor hung up without an exit status")
                return shimwire.LOST_STATUS
            data += chunk
        try:
            status = int(shimwire.decode(data.split(b"\n", 1)[0])["exit"])
        except (ValueError, KeyError, TypeError) as err:
            log("WARNING", f"shim: bad answer from the monitor: {err}")
            return shimwire.LOST_STATUS
        return status if 0 <= status <= 255 else 255


class Args:
    """`--socket S --container C --rootfs R [--exec E] [--terminal] [--netns N] [--log L]
    [--report-fd FD]`."""

    def __init__(self, argv: list[str]) -> None:
        self.socket = self.container = self.rootfs = ""
        self.exec_id = ""
        self.terminal = False
        self.netns: str | None = None
        self.log = os.devnull
        self.report_fd = ""
        names = {"--socket": "socket", "--container": "container", "--rootfs": "rootfs",
                 "--exec": "exec_id",
                 "--netns": "netns", "--log": "log", "--report-fd": "report_fd"}
        rest = list(argv)
        while rest:
            flag = rest.pop(0)
            if flag == "--terminal":
                self.terminal = True
            elif flag in names and rest:
                setattr(self, names[flag], rest.pop(0))
            else:
                raise SystemExit(f"cocoon-shim: unexpected argument {flag!r}")
        if not self.socket or not self.container or not os.path.isabs(self.rootfs):
            raise SystemExit("usage: python -m cocoon.runtime.shimproc --socket S "
                             "--container C --rootfs ABSOLUTE_PATH [--exec E] [--terminal] "
                             "[--netns N] [--log L] [--report-fd FD]")


def report_failed(fd_text: str, reason: str) -> None:
    """Tell the spawner why the shim ends before it attached (one line)."""
    if not fd_text:
        return
    line = shimwire.FAILED + " ".join(reason.split()).encode(errors="replace")
    with contextlib.suppress(OSError):
        os.write(int(fd_text), line[:shimwire.REPORT_MAX - 1] + b"\n")


def report_attached(fd_text: str) -> None:
    """Tell the spawner the attach is sent: the monitor answers for the process from now on."""
    if not fd_text:
        return
    fd = int(fd_text)
    try:
        os.write(fd, shimwire.ATTACHED)
    except OSError as err:
        log("WARNING", f"shim: cannot report the attach: {err}")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def run(args: Args) -> int:
    netns_fd = open_netns(args.netns)
    try:
        hide_host_processes(args.rootfs)
    except OSError as err:
        # a shim left in the host's mount namespace would hand an engine that joins it (podman
        # cp) the host's files: no shim rather than that
        reason = f"cannot root its mount namespace at the rootfs {args.rootfs}: {err}"
        log("ERROR", f"shim {args.container}: {reason}")
        report_failed(args.report_fd, reason)
        return shimwire.LOST_STATUS
    enter_netns(args.netns, netns_fd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # set up: from here on the shim only talks to the monitor over its socket (stdio
        # handed over, signals forwarded as messages) and exits; none of root's rights
        privileges.confine(0)
        sock.connect(args.socket)
        shim = Shim(sock)
        shim.forward_signals(args.terminal)
        fds = [0] if args.terminal else [0, 1, 2]
        shimwire.send_with_fds(sock, {"attach": {
            "container_id": args.container, "exec_id": args.exec_id,
            "terminal": args.terminal}}, fds)
        report_attached(args.report_fd)
        return shim.wait()
    except OSError as err:
        log("ERROR", f"shim {args.container}/{args.exec_id or 'init'}: {err}")
        return shimwire.LOST_STATUS
    finally:
        sock.close()


def main(argv: list[str]) -> NoReturn:
    global LOG_PATH
    args = Args(argv)
    LOG_PATH = args.log
    code = shimwire.LOST_STATUS
    try:
        code = run(args)
    except BaseException as err:  # the engine must always get an exit status
        log("ERROR", f"shim {args.container} failed: {err!r}")
    finally:
        exit_like(code)


if __name__ == "__main__":
    main(sys.argv[1:])
