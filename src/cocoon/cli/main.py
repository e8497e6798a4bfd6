"""The `cocoon` command: runc's global flags, then one verb; each verb lives in its own module.

A verb module exposes `register(subparsers)`, which adds its parser and sets `func` to a
`(args, ctx) -> int` callable. Verb modules keep heavy imports inside their functions so that
every invocation stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from cocoon import __version__, log
from cocoon.cli.context import Context
from cocoon.errors import CocoonError

# verb module names under cocoon.cli, in the order `--help` lists them
VERB_MODULES: tuple[str, ...] = (
    "create", "start", "state", "kill", "delete", "run", "exec", "ps", "list", "pause",
    "update", "events", "spec", "features", "version", "check", "env", "assets", "demo",
)

logger = logging.getLogger("cocoon.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cocoon",
        description="Cocoon: an OCI runtime that runs every container in its own VM.",
    )
    parser.add_argument("--root", default=None,
                        help="state directory (default: /run/cocoon, or $COCOON_ROOT)")
    parser.add_argument("--log", default=None, help="write the log to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="accepted for runc compatibility; cgroups live in the guest")
    parser.add_argument("-v", "--version", action="version",
                        version=f"cocoon version {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for name in VERB_MODULES:
        module = importlib.import_module(f"cocoon.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING
    log.setup(level, args.log_format, args.log)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    ctx = Context.from_args(args)
    _terminate_by_exception()
    try:
        rc: int = args.func(args, ctx)
        return rc
    except Terminated as err:
        # a signal arrived while the verb worked: what it had set up was undone on the way out
        print(f"cocoon: interrupted by {signal.Signals(err.signal).name}", file=sys.stderr)
        return 128 + err.signal
    except CocoonError as err:
        # runc's behaviour: the error goes to the --log file (JSON when asked) and one line to
        # stderr, which the engine shows its user.
        if args.log:
            logger.error("%s", err)
        print(f"cocoon: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM, SIGINT or SIGHUP arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signum


def _terminate_by_exception() -> None:
    """Turn termination signals into an exception so `finally` and ExitStack cleanups run.

    Without this, a `cocoon create` killed while the VM boots would leave QEMU and the monitor
    running. Verbs that relay a process (run, exec) install their own forwarding handlers.
    """
    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


def entry() -> None:
    sys.exit(main())
