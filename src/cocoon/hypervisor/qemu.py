"""The life of one QEMU process: start it, talk QMP to it, stop it, and notice when it dies.

Asyncio throughout, because the sandbox monitor that owns a VM is an asyncio program and must
learn of QEMU's death while it serves clients. QEMU runs in its own session (a Ctrl-C meant for
the caller does not reach it) and, unless asked otherwise, with `PR_SET_PDEATHSIG` so that a
crashed owner does not leave an orphaned VM running. Started by root, it runs in a root of its
own (`jail`) as a user of its own (`vmuser`) without a capability; the files it writes by name
are made before it starts and handed to that user. The guest console and QEMU's own stderr
share one per-VM log file, whose last lines are the evidence every `VMDiedError` carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from qemu.qmp import ExecuteError, QMPClient, QMPError

from cocoon.errors import HypervisorError, VMDiedError
from cocoon.hypervisor import hotplug, jail, vmuser
from cocoon.hypervisor.cmdline import build_command
from cocoon.hypervisor.config import NetInterface, VirtioFsShare, VMConfig
from cocoon.hypervisor.hostclock import host_tsc_khz

logger = logging.getLogger("cocoon.hypervisor.qemu")

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_SYS_CAPSET = 126
_CAPABILITY_VERSION_3 = 0x20080522
VHOST_VSOCK = Path("/dev/vhost-vsock")
CONSOLE_TAIL_LINES = 20
_TAIL_BYTES = 16384
_POLL = 0.01
# a QEMU that lost its QMP connection is normally exiting; give it this long to be reaped
_EXIT_GRACE = 1.0
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


class QemuVM:
    """One QEMU process and its QMP session; see the module docstring for the guarantees.

    Lifecycle: `start()` once; then `status()`, `execute()`, `powerdown()`, `quit()`, `kill()`,
    `wait()`; `stop()` always ends and reaps the process and may be called any number of times.
    Used as an async context manager it starts on entry and stops on exit.
    """

    def __init__(self, config: VMConfig, *, die_with_parent: bool = True,
                 warn_on_death: bool = True) -> None:
        self.config = config
        self.die_with_parent = die_with_parent
        self.warn_on_death = warn_on_death  # off where a crash is an expected answer (probes)
        self.phases: dict[str, float] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._qmp: QMPClient | None = None
        self._exit: asyncio.Task[int] | None = None
        self._t0 = 0.0
        self._stopping = False
        self._own_user = config.own_root and vmuser.runs_as_own_user()

    # --- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def uid(self) -> int | None:
        """QEMU's own uid (and gid), once started; None when it runs as its caller's."""
        if self._proc is None or not self._own_user:
            return None
        return vmuser.qemu_ids(self._proc.pid)

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def running(self) -> bool:
        return self._exit is not None and not self._exit.done()

    def elapsed(self) -> float:
        """Seconds since QEMU was spawned (monotonic clock)."""
        return time.monotonic() - self._t0

    def mark(self, phase: str) -> float:
        """Record and log a start-path phase with its offset from the spawn, for measurements."""
        now = time.monotonic()
        offset = now - self._t0
        self.phases[phase] = offset
        logger.info("vm %s: %s at +%.3f s", self.config.name, phase, offset,
                    extra={"vm": self.config.name, "phase": phase, "elapsed": round(offset, 6),
                           "monotonic": round(now, 6)})
        return offset

    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> list[str]:
        """The last non-empty lines of the console log, control sequences removed."""
        return console_tail(self.config.console_log, lines)

    # --- start ---------------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Spawn QEMU and connect QMP; on any failure QEMU is killed and reaped before raising."""
        if self._proc is not None:
            raise HypervisorError(f"VM {self.config.name} was already started",
                                  vm=self.config.name, pid=self._proc.pid)
        _preflight(self.config)
        if self._own_user:
            _preflight_own_user(self.config)
        if (self.config.machine == "microvm" and self.config.accel == "tcg"
                and self.config.tsc_khz is None):
            self.config = dataclasses.replace(self.config, tsc_khz=host_tsc_khz())
        argv = build_command(self.config)
        logger.debug("vm %s: %s", self.config.name, " ".join(argv))
        log_fd = _open_console_log(self.config.console_log)
        handed = [log_fd]
        try:
            handed += _open_ram_file(self.config)
            self._t0 = time.monotonic()
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                pass_fds=self.config.inherited_fds,
                start_new_session=True,
                preexec_fn=_child_setup(self.config, self.die_with_parent, handed,
                                        self._own_user))
        except (OSError, subprocess.SubprocessError) as err:
            # a failing preexec hook (QEMU's own root) comes back as a SubprocessError
            raise HypervisorError(f"cannot start {argv[0]}: {err}", argv=argv) from err
        finally:
            for fd in handed:
                os.close(fd)
        self._exit = asyncio.create_task(self._watch_exit(), name=f"qemu-exit-{self.pid}")
        self.mark("qemu-started")
        try:
            await self._connect_qmp(timeout)
        except BaseException:
            await self.kill()
            raise
        self.mark("qmp-connected")
        if self.config.incoming_fd is not None:
            try:
                await self._set_capabilities()
                await self.execute("migrate-incoming",
                                   {"uri": f"fd:{self.config.incoming_fd}"})
            except BaseException:
                await self.kill()
                raise

    async def _connect_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        path = str(self.config.qmp_socket)
        last_error: Exception | None = None
        while True:
            if not self.running:
                raise self._died("before its QMP socket answered")
            if os.path.exists(path):
                client = QMPClient(self.config.name)
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), _POLL)):
                        await client.connect(path)
                    self._qmp = client
                    return
                except (QMPError, OSError, TimeoutError) as err:
                    last_error = err
            if time.monotonic() >= deadline:
                raise HypervisorError(
                    f"QMP of VM {self.config.name} did not answer within {timeout:g} s",
                    vm=self.config.name, socket=path, last_error=repr(last_error),
                    console_tail=self.console_tail())
            assert self._exit is not None
            await asyncio.wait([self._exit], timeout=_POLL)

    async def _watch_exit(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        self.mark("qemu-exited")
        if code != 0 and not self._stopping:
            logger.log(logging.WARNING if self.warn_on_death else logging.INFO,
                       "vm %s: QEMU exited %s; console: %s", self.config.name,
                       describe_exit(code), " | ".join(self.console_tail(5)))
        await self._close_qmp()
        return code

    # --- QMP -----------------------------------------------------------------------------------

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      timeout: float = 10.0) -> object:
        """Run one QMP command; `VMDiedError` when QEMU is gone or goes while it runs."""
        qmp = self._require_qmp(command)
        try:
            async with asyncio.timeout(timeout):
                return await qmp.execute(command, arguments)
        except ExecuteError as err:
            raise HypervisorError(f"QMP {command} failed on VM {self.config.name}: {err}",
                                  vm=self.config.name, command=command,
                                  arguments=dict(arguments or {}),
                                  error_class=err.error_class) from err
        except TimeoutError as err:
            raise HypervisorError(f"QMP {command} got no answer from VM {self.config.name} "
                                  f"within {timeout:g} s", vm=self.config.name,
                                  command=command) from err
        except (QMPError, OSError, EOFError) as err:
            if await self._exited_within(_EXIT_GRACE):
                raise self._died(f"during QMP {command}") from err
            raise HypervisorError(f"QMP connection to VM {self.config.name} lost during "
                                  f"{command}: {err!r}", vm=self.config.name,
                                  command=command) from err

    async def status(self) -> str:
        """The VM's run state as QEMU reports it (`running`, `paused`, `shutdown`, ...)."""
        reply = await self.execute("query-status")
        if not isinstance(reply, dict) or not isinstance(reply.get("status"), str):
            raise HypervisorError(f"query-status on VM {self.config.name} answered {reply!r}",
                                  vm=self.config.name, reply=reply)
        status: str = reply["status"]
        return status

    def _require_qmp(self, command: str) -> QMPClient:
        if self._exit is None:
            raise HypervisorError(f"VM {self.config.name} is not started", vm=self.config.name,
                                  command=command)
        if self._exit.done():
            raise self._died(f"before QMP {command}")
        if self._qmp is None:
            raise HypervisorError(f"VM {self.config.name} has no QMP connection",
                                  vm=self.config.name, command=command)
        return self._qmp

    async def _close_qmp(self) -> None:
        qmp, self._qmp = self._qmp, None
        if qmp is None:
            return
        try:
            await qmp.disconnect()
        except (QMPError, OSError, EOFError) as err:
            # the reader saw QEMU hang up; that is how a QMP session ends when QEMU exits
            logger.debug("vm %s: QMP closed: %r", self.config.name, err)

    # --- templates: save, restore, hot-plug ---------------------------------------------------

    async def _set_capabilities(self) -> None:
        if self.config.ignore_shared_ram:
            await self.execute("migrate-set-capabilities", {"capabilities": [
                {"capability": "x-ignore-shared", "state": True}]})

    async def wait_restored(self, timeout: float = 30.0) -> None:
        """Wait until QEMU has loaded the state it was started with (`incoming_fd`).

        The guest stays paused (a template is saved paused, and a restored VM keeps the run
        state it was saved in) until `resume()`. A state QEMU cannot load makes it exit, which
        raises `VMDiedError` here with its words from the console log.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status()
            if status != "inmigrate":
                break
            if time.monotonic() > deadline:
                raise HypervisorError(f"VM {self.config.name} did not load its saved state "
                                      f"within {timeout:g} s", vm=self.config.name)
            await asyncio.sleep(0.002)
        if status not in ("running", "paused", "prelaunch"):
            raise HypervisorError(f"VM {self.config.name} is {status} after loading its "
                                  "saved state", vm=self.config.name, status=status,
                                  console_tail=self.console_tail())
        self.mark("restored")

    async def resume(self) -> None:
        await self.execute("cont")
        self.mark("resumed")

    async def plug_share(self, index: int, share: VirtioFsShare, port: int) -> None:
        """Hot-plug a virtio-fs device (virtiofsd must be listening on its socket)."""
        for command, arguments in hotplug.share_commands(index, share, port):
            await self.execute(command, arguments)

    async def plug_nic(self, index: int, nic: NetInterface, port: int) -> None:
        """Hot-plug a virtio-net device on the tap `nic.tap_fd` (sent to QEMU over QMP), or on
        a user-mode network (`nic.user`)."""
        if not nic.user:
            if nic.tap_fd is None:
                raise HypervisorError("a hot-plugged NIC needs its tap as an open fd",
                                      vm=self.config.name, mac=nic.mac)
            self._require_qmp("getfd").send_fd_scm(nic.tap_fd)
            await self.execute("getfd", {"fdname": hotplug.tap_fd_name(index)})
        for command, arguments in hotplug.nic_commands(index, nic, port):
            await self.execute(command, arguments)

    async def save(self, fd: int, timeout: float = 120.0) -> None:
        """Pause the guest and write its device state (RAM too unless shared and ignored) to
        the open file `fd`; the VM stays paused and cannot run on (QEMU refuses to migrate a
        used VM twice), so the caller quits it next."""
        qmp = self._require_qmp("migrate")
        await self.execute("stop")
        await self._set_capabilities()
        await self.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        qmp.send_fd_scm(fd)
        await self.execute("getfd", {"fdname": "cocoon-save"})
        await self.execute("migrate", {"uri": "fd:cocoon-save"})
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.execute("query-migrate")
            status = reply.get("status") if isinstance(reply, dict) else None
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                error = reply.get("error-desc", status) if isinstance(reply, dict) else status
                raise HypervisorError(f"saving VM {self.config.name} failed: {error}",
                                      vm=self.config.name, reply=reply)
            if time.monotonic() > deadline:
                raise HypervisorError(f"saving VM {self.config.name} did not finish within "
                                      f"{timeout:g} s", vm=self.config.name, reply=reply)
            await asyncio.sleep(0.005)
        self.mark("saved")

    # --- stop ----------------------------------------------------------------------------------

    async def wait(self, timeout: float | None = None) -> int:
        """QEMU's exit status once it has exited; `HypervisorError` if not within `timeout`."""
        if self._exit is None:
            raise HypervisorError(f"VM {self.config.name} is not started", vm=self.config.name)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._exit)
        except TimeoutError as err:
            raise HypervisorError(f"VM {self.config.name} did not exit within {timeout:g} s",
                                  vm=self.config.name, pid=self.pid) from err

    async def powerdown(self, timeout: float = 10.0) -> int:
        """ACPI power button, then wait: the guest shuts down cleanly or this raises."""
        self._stopping = True
        await self.execute("system_powerdown")
        try:
            return await self.wait(timeout)
        except HypervisorError as err:
            raise HypervisorError(f"VM {self.config.name} did not power off within "
                                  f"{timeout:g} s of system_powerdown", vm=self.config.name,
                                  console_tail=self.console_tail()) from err

    async def quit(self, timeout: float = 5.0) -> int:
        """Ask QEMU itself to exit now (the guest gets no say)."""
        self._stopping = True
        # QEMU may hang up before its reply arrives; the exit is what was asked for
        with contextlib.suppress(VMDiedError):
            await self.execute("quit")
        return await self.wait(timeout)

    async def kill(self) -> int:
        """SIGKILL and reap; returns the exit status (already-exited QEMU: its status)."""
        self._stopping = True
        if self._proc is None or self._exit is None:
            raise HypervisorError(f"VM {self.config.name} is not started", vm=self.config.name)
        if self._proc.returncode is None:
            # it may exit between the check and the signal; the exit task reaps it either way
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        code = await asyncio.shield(self._exit)
        await self._close_qmp()
        return code

    async def stop(self, grace: float = 0.0, quit_timeout: float = 2.0) -> int | None:
        """End the VM whatever its state: power button (if `grace`), QMP quit, then SIGKILL.

        Never raises for a VM that is already gone; returns None if it was never started.
        """
        if self._exit is None:
            return None
        self._stopping = True
        if self.running and grace > 0:
            try:
                await self.powerdown(grace)
            except HypervisorError as err:
                logger.info("vm %s: %s; quitting", self.config.name, err)
        if self.running:
            try:
                await self.quit(quit_timeout)
            except HypervisorError as err:
                logger.info("vm %s: %s; killing", self.config.name, err)
        return await self.kill()

    async def _exited_within(self, seconds: float) -> bool:
        assert self._exit is not None
        await asyncio.wait([self._exit], timeout=seconds)
        return self._exit.done()

    def _died(self, context: str) -> VMDiedError:
        code = self.returncode
        tail = self.console_tail()
        last = tail[-1] if tail else "(console log empty)"
        return VMDiedError(
            f"QEMU of VM {self.config.name} exited {describe_exit(code)} {context}; "
            f"last console line: {last}",
            vm=self.config.name, pid=self.pid, exit_code=code, console_tail=tail,
            console_log=str(self.config.console_log))

    async def __aenter__(self) -> QemuVM:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def describe_exit(code: int | None) -> str:
    """`with status 1` or `on signal SIGKILL`, from a subprocess return code."""
    if code is None:
        return "(still running)"
    if code < 0:
        try:
            return f"on signal {signal.Signals(-code).name}"
        except ValueError:
            return f"on signal {-code}"
    return f"with status {code}"


def console_tail(path: Path, lines: int = CONSOLE_TAIL_LINES) -> list[str]:
    """The last non-empty lines of a console log; [] when it cannot be read."""
    try:
        # QEMU's user owns the directory: a link or a FIFO it put there is not followed
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as log:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            log.seek(max(log.seek(0, os.SEEK_END) - _TAIL_BYTES, 0))
            data = log.read()
        except OSError:
            return []
    text = _ANSI_RE.sub("", data.decode("utf-8", "replace").replace("\r", "\n"))
    kept = [line.strip() for line in text.split("\n") if line.strip()]
    return kept[-lines:]


def _preflight(config: VMConfig) -> None:
    """Fail before spawning with the path at fault, instead of in QEMU's terse stderr."""
    files = {"kernel": config.kernel, "initrd": config.initrd,
             "firmware": config.firmware_path}
    for what, path in files.items():
        if path is not None and not path.is_file():
            raise HypervisorError(f"{what} not found: {path}", vm=config.name, path=str(path))
    if config.vsock_cid is not None and not VHOST_VSOCK.exists():
        raise HypervisorError(f"vsock requested but {VHOST_VSOCK} is absent",
                              vm=config.name, vsock_cid=config.vsock_cid)
    for path in config.socket_paths:
        _remove_stale_socket(config.name, path)


def _preflight_own_user(config: VMConfig) -> None:
    """What QEMU running as its own user cannot do, refused with the reason before it starts."""
    problem = vmuser.mapping_problem()
    if problem is not None:
        raise HypervisorError(f"cannot start VM {config.name}: {problem}", vm=config.name)
    backend = config.memory_backend
    if backend is not None and backend.kind == "file" and not backend.share:
        # QEMU 7.2 opens a private mapping's file read-write (8.2's rom=off would not)
        raise HypervisorError(
            f"VM {config.name}: a private mapping of {backend.path} needs QEMU to open it "
            "read-write, which its own user may not; give it a copy (a memfd)",
            vm=config.name, path=str(backend.path))


def _remove_stale_socket(vm: str, path: Path) -> None:
    """QEMU replaces a stale socket itself, but only after we would have connected to it."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise HypervisorError(f"{path} exists and is not a socket", vm=vm, path=str(path))
    path.unlink()


def _open_console_log(path: Path) -> int:
    """A new, empty console log. A previous QEMU's user owned its directory, so whatever is
    at the path (a link to a host file, a FIFO) is removed, never followed or opened.
    O_APPEND on our descriptor and append=on on QEMU's chardev keep both writers' lines
    whole."""
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND
                       | os.O_CLOEXEC, 0o640)
    except OSError as err:
        raise HypervisorError(f"cannot open console log {path}: {err}", path=str(path)) from err


def _open_ram_file(config: VMConfig) -> list[int]:
    """A template's RAM file (a shared file backend), made here so that it is handed to QEMU's
    user as a descriptor and QEMU needs no right to its directory; [] for other backends."""
    backend = config.memory_backend
    if backend is None or backend.kind != "file" or not backend.share or backend.path is None:
        return []
    try:
        return [os.open(backend.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600)]
    except OSError as err:
        raise HypervisorError(f"cannot open the RAM file {backend.path}: {err.strerror}",
                              vm=config.name, path=str(backend.path)) from err


def _child_setup(config: VMConfig, die_with_parent: bool, handed: list[int],
                 own_user: bool) -> Callable[[], None]:
    """The preexec hook, as root (when started by root): QEMU's files handed to its user
    (`vmuser`), QEMU's own root (`jail`), its credentials (`_become_qemu`), and (if asked)
    the parent death guard, which a change of credentials would clear, so it comes last."""
    own_root = jail.entry(config) if config.own_root and os.geteuid() == 0 else None
    hand_over = vmuser.hand_over(jail.creation_dirs(config),
                                 [share.socket for share in config.shares], handed)
    become = _become_qemu()
    guard = _parent_death_guard(os.getpid()) if die_with_parent else None

    def setup() -> None:
        ids = vmuser.qemu_ids(os.getpid())
        if own_user:
            hand_over(ids)
        if own_root is not None:
            own_root(ids if own_user else None)
        become(ids, own_user)
        if guard is not None:
            guard()

    return setup


def _become_qemu() -> Callable[[int, bool], None]:
    """A preexec hook that leaves QEMU without a capability: the bounding set emptied, so
    exec grants none, the inheritable and ambient sets cleared, no supplementary group, and
    its own ids (`vmuser`): uid and gid when `own_user`, else the gid only (uid 0 without a
    capability; uid 0 without capabilities may still enter another such process's
    /proc/<pid>/root unless both uid and gid match, so each QEMU's gid is its own). Nothing
    QEMU does needs a capability (its taps, RAM and state arrive as descriptors, the files
    it opens are handed to it); a QEMU taken over cannot mount, load a module, change the
    host's network, trace another process or write a file that is not its own."""
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 40  # CAP_CHECKPOINT_RESTORE, Linux 5.9
    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork, not in the child
    prctl, syscall = libc.prctl, libc.syscall

    def become(ids: int, own_user: bool) -> None:
        if os.geteuid() != 0:
            return  # an unprivileged caller has nothing to drop
        for cap in range(last + 1):
            if prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")
        if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")
        os.setgroups([])
        os.setresgid(ids, ids, ids)
        if own_user:
            os.setresuid(ids, ids, ids)  # clears the permitted and effective sets too
        header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()  # two sets of effective, permitted, inheritable: none
        if syscall(_SYS_CAPSET, header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")

    return become


def _parent_death_guard(parent_pid: int) -> Callable[[], None]:
    """A preexec hook: SIGKILL QEMU when the thread that spawned it dies.

    The kernel ties PR_SET_PDEATHSIG to the spawning thread, so VMs must be started from the
    thread that lives as long as their owner (the event loop's). If the owner died before the
    hook ran, the child kills itself at once instead of running as an orphan.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child

    def guard() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return guard
