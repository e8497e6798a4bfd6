"""`cocoon checkpoint` and `cocoon restore`, with runc's flags (podman passes them).

The container's processes are dumped by CRIU inside its VM and restored into a new VM for the
same bundle (docs/design.md, "Checkpoint and restore"). Flags that need what a VM's CRIU does
not offer here (pre-dumps, lazy pages, a page server) are refused by name; those that only
tune CRIU for a host's namespaces are accepted and have no effect.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context
from cocoon.errors import ConfigError
from cocoon.runtime.options import CheckpointOptions, CreateOptions

# runc flags accepted without effect: the guest's CRIU manages the container's own namespaces
# and cgroups, and a container in a VM has no shell job or external unix sockets to carry
IGNORED_FLAGS = ("--ext-unix-sk", "--shell-job", "--auto-dedup")
IGNORED_VALUED = ("--manage-cgroups-mode", "--empty-ns", "--lsm-profile",
                  "--lsm-mount-context")
# runc flags refused: each needs CRIU machinery beyond one dump and one restore
REFUSED_FLAGS = ("--pre-dump", "--lazy-pages")
REFUSED_VALUED = ("--parent-path", "--page-server", "--status-fd")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-path", default="checkpoint",
                        help="directory of the checkpoint's images (default: ./checkpoint)")
    parser.add_argument("--work-path", default=None,
                        help="directory for CRIU's log (default: the image path)")
    parser.add_argument("--tcp-established", action="store_true",
                        help="carry established TCP connections")
    parser.add_argument("--file-locks", action="store_true", help="carry file locks")
    for flag in IGNORED_FLAGS + REFUSED_FLAGS:
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in IGNORED_VALUED + REFUSED_VALUED:
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS)


def register(sub: Any) -> None:
    checkpoint = sub.add_parser("checkpoint",
                                help="save a running container's processes and stop it")
    _common(checkpoint)
    checkpoint.add_argument("--leave-running", action="store_true",
                            help="leave the container running after the checkpoint")
    checkpoint.add_argument("container_id")
    checkpoint.set_defaults(func=run_checkpoint)
    restore = sub.add_parser("restore", help="restore a container from a checkpoint")
    _common(restore)
    restore.add_argument("-b", "--bundle", default=".", help="path to the OCI bundle")
    restore.add_argument("-d", "--detach", action="store_true",
                         help="accepted: the restored container always runs detached")
    restore.add_argument("--pid-file", default=None,
                         help="write the container's host pid here")
    restore.add_argument("--console-socket", default=None,
                         help="refused: a terminal cannot be restored")
    restore.add_argument("--no-subreaper", action="store_true", help=argparse.SUPPRESS)
    restore.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)
    restore.add_argument("container_id")
    restore.set_defaults(func=run_restore)


def _refuse_unsupported(args: argparse.Namespace) -> None:
    for flag in REFUSED_FLAGS + REFUSED_VALUED:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value:
            raise ConfigError(f"{flag} is not supported: a container in a VM is checkpointed "
                              "in one dump, without a page server or a parent image")


def _options(args: argparse.Namespace, leave_running: bool = False) -> CheckpointOptions:
    _refuse_unsupported(args)
    return CheckpointOptions(
        image_path=Path(args.image_path).absolute(),
        work_path=Path(args.work_path).absolute() if args.work_path else None,
        leave_running=leave_running, tcp_established=args.tcp_established,
        file_locks=args.file_locks)


def run_checkpoint(args: argparse.Namespace, ctx: Context) -> int:
    runtime(ctx).checkpoint(args.container_id, _options(args, args.leave_running))
    return 0


def run_restore(args: argparse.Namespace, ctx: Context) -> int:
    if args.console_socket:
        raise ConfigError("--console-socket: a container with a terminal cannot be restored "
                          "(its checkpoint would have been refused)")
    options = CreateOptions(bundle=Path(args.bundle),
                            pid_file=Path(args.pid_file).absolute() if args.pid_file else None,
                            restore=_options(args))
    runtime(ctx).restore(args.container_id, options)
    return 0
