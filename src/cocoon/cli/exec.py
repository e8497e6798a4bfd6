"""`cocoon exec`: run another process in a container (in its VM and namespaces)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from cocoon.cli.common import runtime
from cocoon.cli.context import Context
from cocoon.errors import ConfigError
from cocoon.oci.spec import LinuxCapabilities, Process, User


def register(sub: Any) -> None:
    parser = sub.add_parser("exec", help="run a process in a running container")
    parser.add_argument("-p", "--process", default=None, help="process.json to run")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--cwd", default=None)
    parser.add_argument("-u", "--user", default=None, help="UID[:GID]")
    parser.add_argument("-g", "--additional-gids", action="append", type=int, default=[])
    parser.add_argument("-c", "--cap", action="append", default=[], help="add a capability")
    parser.add_argument("--no-new-privs", action="store_true")
    parser.add_argument("-d", "--detach", action="store_true")
    parser.add_argument("--pid-file", default=None)
    parser.add_argument("--console-socket", default=None)
    parser.add_argument("--preserve-fds", type=int, default=0, help="accepted (no effect)")
    parser.add_argument("--process-label", default="", help="accepted (no effect)")
    parser.add_argument("--apparmor", default="", help="accepted (no effect)")
    parser.add_argument("--ignore-paused", action="store_true", help="accepted (no effect)")
    parser.add_argument("--cgroup", default=None, help="accepted (no effect)")
    parser.add_argument("container_id")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run)


def build_process(args: argparse.Namespace, base: Process | None) -> Process:
    if args.process:
        try:
            data = json.loads(Path(args.process).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"--process {args.process}: {err}") from err
        process = Process.from_dict(data, "process")
    else:
        if not args.command:
            raise ConfigError("exec needs a command, or --process FILE")
        if base is None:
            raise ConfigError("the container's config has no process to start from")
        process = dataclasses.replace(base, args=tuple(args.command), terminal=False)
    changes: dict[str, Any] = {}
    if args.tty:
        changes["terminal"] = True
    if args.env:
        changes["env"] = (*process.env, *args.env)
    if args.cwd:
        changes["cwd"] = args.cwd
    if args.user:
        uid, _, gid = args.user.partition(":")
        try:
            changes["user"] = dataclasses.replace(
                process.user, uid=int(uid), gid=int(gid) if gid else process.user.gid)
        except ValueError:
            raise ConfigError(f"--user {args.user!r}: expected UID[:GID]") from None
    if args.additional_gids:
        user: User = changes.get("user", process.user)
        changes["user"] = dataclasses.replace(user, additional_gids=tuple(args.additional_gids))
    if args.cap:
        caps = process.capabilities or LinuxCapabilities()
        extra = tuple(c.upper() for c in args.cap)
        changes["capabilities"] = dataclasses.replace(
            caps, bounding=(*caps.bounding, *extra), effective=(*caps.effective, *extra),
            permitted=(*caps.permitted, *extra))
    if args.no_new_privs:
        changes["no_new_privileges"] = True
    return dataclasses.replace(process, **changes) if changes else process


def run(args: argparse.Namespace, ctx: Context) -> int:
    rt = runtime(ctx)
    state = rt.load(args.container_id)
    base = rt.store.config(state.id).process
    process = build_process(args, base)
    result = rt.exec_process(args.container_id, process, detach=args.detach,
                             pid_file=Path(args.pid_file).absolute() if args.pid_file else None,
                             console_socket=args.console_socket)
    return 0 if args.detach else result
