"""The sandbox's share: the one host directory virtiofsd exports to the guest.

Container rootfs and bind-mount sources are bind-mounted beneath it, per container, so the guest
can reach nothing else of the host. The share is itself a shared mount point: binds added after
virtiofsd started (a second container of a pod) propagate into virtiofsd's private mount
namespace, which is a slave of the host's. Each bind is a slave of its source, so a mount the host
makes beneath a volume later reaches the guest too, unless the volume asks for private
propagation. Read-only volumes are made read-only here, on the host, as well as in the guest: the
guest is not trusted to honour the flag.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cocoon.errors import ConfigError, SandboxError
from cocoon.linux import mountns
from cocoon.linux import syscalls as sc
from cocoon.linux.mounts import PROPAGATION
from cocoon.linux.paths import make_in_root

logger = logging.getLogger("cocoon.sandbox.share")

GUEST_MOUNTPOINT = "/run/cocoon/shared"
VIRTIOFS_TAG = "cocoon"
MODULES_DIR = ".modules"  # in the share: the guest kernel's module tree
CHECKPOINT_DIR = "checkpoint"  # in a container's directory of the share: its checkpoint


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path).rstrip("/")
    found: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def detach_all(path: Path) -> None:
    for target in mounts_under(path):
        try:
            sc.umount2(target, sc.MNT_DETACH)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOENT):
                logger.warning("cannot unmount %s: %s", target, err)


def remove_vm_dir(path: Path) -> None:
    """Unmount whatever is left under a sandbox directory and remove it."""
    if not path.exists():
        return
    detach_all(path)
    shutil.rmtree(path, ignore_errors=True)


# Every bind in the share is a slave of its source (when the source is a shared mount at all):
# the host's later mounts beneath the source reach it, and virtiofsd (whose namespace is a slave
# of the host's), and so the guest; nothing travels back, not even the unmounting of the
# share's binds when a container goes (as a peer of the source, that would unmount the host's
# own mounts beneath the source).
SLAVE = sc.MS_SLAVE | sc.MS_REC


def host_propagation(options: Iterable[str]) -> tuple[int, ...]:
    """The propagation changes, in order, for the share's bind of a volume with `options`.

    A slave of the source first; then each propagation option as the host can honour it:
    `private` and `unbindable` (and their recursive forms) cut the bind from the source, so
    a mount the host makes beneath the source later stays out of the container, as under
    runc; `shared` and `slave` keep it a slave (the guest can send nothing back).
    """
    flags = [SLAVE]
    for option in options:
        flag = PROPAGATION.get(option)
        if flag is None:
            continue
        kind = sc.MS_PRIVATE if flag & (sc.MS_PRIVATE | sc.MS_UNBINDABLE) else sc.MS_SLAVE
        flags.append(kind | (flag & sc.MS_REC))
    return tuple(flags)


class Share:
    """The share at `root` (a sandbox directory's `shared`).

    Binds are added and taken away where the share is mounted: the mount namespace of the
    sandbox's monitor, which made it. That is the caller's own namespace, or a peer of it,
    except where an engine runs the runtime in a mount namespace of its own: podman does so
    for a container with a user namespace, so the runtime of a pod's second container does
    not see the share the first one's VM mounted (its binds went nowhere, and the guest found
    an empty root). Then the work is done from inside the monitor's namespace (the tree to bind
    is still cloned in the caller's, where the engine prepared it).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _monitor_namespace(self) -> int | None:
        """An fd of the monitor's mount namespace when it is not this process's, else None
        (no monitor, or one in this namespace: the monitor itself, the CLI that started it)."""
        sandbox_dir = self.root.parent
        try:
            pid = int((sandbox_dir / "monitor.pid").read_text().strip())
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            # checked after the namespace is open: a pid reused before is refused here,
            # one reused after cannot change what `fd` holds
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if str(sandbox_dir).encode() in args and not mountns.same_namespace(fd):
                return fd
        except OSError:
            pass
        os.close(fd)
        return None

    def _where_mounted(self, work: Callable[[], None]) -> None:
        """`work` in the namespace the share is mounted in (see the class)."""
        ns_fd = self._monitor_namespace()
        if ns_fd is None:
            work()
            return
        try:
            mountns.call_in(ns_fd, work)
        finally:
            os.close(ns_fd)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if str(self.root) not in mounts_under(self.root):
            sc.mount(str(self.root), str(self.root), None, sc.MS_BIND)
        sc.mount(None, str(self.root), None, sc.MS_SHARED)

    def guest_path(self, host_path: Path) -> str:
        return f"{GUEST_MOUNTPOINT}/{host_path.relative_to(self.root)}"

    def _bind(self, source: Path, target: Path, readonly: bool, recursive: bool,
              propagation: Sequence[int] = (SLAVE,)) -> None:
        """Bind `source` at `target`, its propagation set (in order) before it is attached:
        a bind made first and changed afterwards would already have handed its copy in
        virtiofsd's namespace to the source's peers, beyond the reach of a later change.

        The guest can write in the share, so `target` and its parents are made and opened
        beneath the share by the kernel, no symlink followed (a guest's `<share>/<id>` ->
        `/` is refused), and the bind is attached to that descriptor, not to a path. The
        source is the caller's choice and is followed, as runc does."""
        tree = sc.open_tree_clone(str(source), recursive)
        try:
            for flag in propagation:
                sc.set_propagation(tree, flag)
            if readonly:
                sc.set_readonly(tree)
            as_file = not source.is_dir()
            self._where_mounted(lambda: self._attach(tree, target, as_file))
        except OSError as err:
            reason = err.strerror or str(err)
            if not reason.startswith("cannot make"):
                reason = f"cannot bind {source} at {target} in the share: {reason}"
            raise SandboxError(reason, path=str(target)) from err
        finally:
            os.close(tree)

    def _attach(self, tree: int, target: Path, as_file: bool) -> None:
        """Make `target` beneath the share (OSError "cannot make ...") and attach `tree`."""
        try:
            root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                at = make_in_root(root_fd, str(target.relative_to(self.root)),
                                  as_file=as_file, in_root=False, no_symlinks=True)
            finally:
                os.close(root_fd)
        except OSError as err:
            raise OSError(err.errno, f"cannot make {target} in the share: "
                          f"{err.strerror or err}", str(target)) from err
        try:
            sc.move_mount(tree, str(target), target_fd=at)
        finally:
            os.close(at)

    def expose_rootfs(self, container_id: str, rootfs: Path, readonly: bool = False) -> str:
        """Bind the container's rootfs into the share; return its path in the guest."""
        if not rootfs.is_dir():
            raise ConfigError(f"root.path: rootfs {rootfs} does not exist or is not a directory",
                              path=str(rootfs))
        target = self.root / container_id / "rootfs"
        self._bind(rootfs, target, readonly, recursive=True)
        return self.guest_path(target)

    def expose_mount(self, container_id: str, index: int, source: Path,
                     readonly: bool, propagation: Sequence[int] = (SLAVE,)) -> str:
        """Bind one volume's source into the share; return its path in the guest.
        `propagation` is applied to the bind, in order (see `host_propagation`)."""
        if not source.exists():
            raise ConfigError(f"mounts[{index}].source: {source} does not exist",
                              path=str(source))
        target = self.root / container_id / "mounts" / str(index)
        self._bind(source, target, readonly, recursive=True, propagation=propagation)
        return self.guest_path(target)

    def expose_modules(self, modules_dir: Path) -> str:
        """Bind the guest kernel's module tree (the asset cache's, depmod'ed) read-only into
        the share; return its path in the guest."""
        target = self.root / MODULES_DIR
        self._bind(modules_dir, target, readonly=True, recursive=False)
        return self.guest_path(target)

    def expose_checkpoint(self, container_id: str, name: str, directory: Path) -> str:
        """Bind a checkpoint's directory (its images, or CRIU's work directory) read-write
        into the share, private (nothing the host mounts there later follows); return its path
        in the guest. `hide` takes it out again."""
        if not directory.is_dir():
            raise ConfigError(f"checkpoint directory {directory} does not exist or is not a "
                              "directory", path=str(directory))
        target = self.root / container_id / CHECKPOINT_DIR / name
        self._bind(directory, target, readonly=False, recursive=False, propagation=(sc.MS_PRIVATE,))
        return self.guest_path(target)

    def hide(self, container_id: str, name: str) -> None:
        """Take a checkpoint directory `expose_checkpoint` bound out of the share."""
        path = self.root / container_id / CHECKPOINT_DIR / name

        def hide() -> None:
            detach_all(path)
            with contextlib.suppress(OSError):
                path.rmdir()

        self._where_mounted(hide)

    def remove_container(self, container_id: str) -> None:
        path = self.root / container_id

        def remove() -> None:
            detach_all(path)
            shutil.rmtree(path, ignore_errors=True)

        self._where_mounted(remove)

    def destroy(self) -> None:
        detach_all(self.root)
        with contextlib.suppress(FileNotFoundError):
            if any(mounts_under(self.root)):
                raise SandboxError(f"share {self.root} still has mounts", path=str(self.root))
            shutil.rmtree(self.root)


def sandbox_dir_mounts(path: Path) -> list[str]:
    """For leak checks: every mount still under a sandbox directory."""
    return mounts_under(path) if os.path.exists("/proc/self/mountinfo") else []
