"""The `cocoon` command: runc's global flags, then one verb; each verb lives in its own module.

A verb module exposes `register(subparsers)`, which adds its parser and sets `func` to a
`(args, ctx) -> int` callable. Only the module of the verb asked for is imported: engines call
`state` many times per container, and it must not pay for QEMU, protobuf and the sandbox
machinery that `create` needs. The top-level parser lists every verb from the VERBS table (the
one-line helps, checked against the modules by the unit tests); a first pass over it finds the
verb, a second parses the whole command line with that verb's own parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from cocoon import __version__
from cocoon.cli.context import Context
from cocoon.errors import CocoonError

# verb -> (its module under cocoon.cli, its one-line help), in the order `--help` lists them
VERBS: dict[str, tuple[str, str]] = {
    "create": ("create", "create a container (boots its VM)"),
    "start": ("start", "start a created container"),
    "state": ("state", "print the state of a container as JSON"),
    "kill": ("kill", "send a signal to a container (default SIGTERM)"),
    "delete": ("delete", "delete a container and everything it holds"),
    "run": ("run", "create and start a container"),
    "exec": ("exec", "run a process in a running container"),
    "ps": ("ps", "list the processes of a container"),
    "list": ("list", "list containers"),
    "pause": ("pause", "freeze every process of a container"),
    "resume": ("pause", "thaw a paused container"),
    "update": ("update", "update a container's resource limits"),
    "checkpoint": ("checkpoint", "save a running container's processes and stop it"),
    "restore": ("checkpoint", "restore a container from a checkpoint"),
    "events": ("events", "print container statistics and OOM events"),
    "spec": ("spec", "create a new specification file (config.json)"),
    "features": ("features", "print the features this runtime supports"),
    "version": ("version", "print version information"),
    "check": ("check", "check that this host can run Cocoon VMs"),
    "env": ("env", "show Cocoon's paths, versions and settings"),
    "assets": ("assets", "build or inspect the guest kernel and images"),
    "demo": ("demo", "run a busybox container in its own VM"),
    "template": ("template", "build, list or remove the VM templates sandboxes start from"),
    "metrics": ("metrics", "expose the host's sandboxes to Prometheus"),
    "debug-console": ("debugconsole", "open a shell in a container's guest (when enabled)"),
    "install": ("install", "add Cocoon's runtime handler to a container engine's configuration"),
    "uninstall": ("install",
                  "remove Cocoon's runtime handler from a container engine's configuration"),
    "config": ("config", "print the configuration reference or an example file"),
}

# Verbs that log nothing of their own: for them the logging machinery (about 8 ms of imports)
# is set up only when --log or --debug asks for it. Engines call `state` many times.
QUIET_VERBS = frozenset({"state", "list", "spec", "version", "features"})


def quiet(args: argparse.Namespace) -> bool:
    """A verb that logs nothing, and no --log or --debug asking it to."""
    return args.verb in QUIET_VERBS and not (args.log or args.debug)


def setup_logging(args: argparse.Namespace, ctx: Context) -> bool:
    """Whether logging was set up (quiet verbs skip it unless asked)."""
    if quiet(args):
        return False
    import logging

    from cocoon import log

    log.setup(logging.DEBUG if args.debug else ctx.log_level,
              "json" if ctx.log_format == "json" else "text", ctx.log_path)
    return True


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error of the CLI (the usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser(verb: str | None = None, listing: bool = True) -> argparse.ArgumentParser:
    """The parser of the whole command line, with `verb`'s own parser (imported from its
    module); with `listing`, every other verb gets a stand-in that only names it and takes any
    arguments."""
    parser = _Parser(
        prog="cocoon",
        description="Cocoon: an OCI runtime that runs every container in its own VM.",
    )
    parser.add_argument("--root", default=None,
                        help="state directory (default: /run/cocoon, or $COCOON_ROOT)")
    parser.add_argument("--log", default=None, help="write the log to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text or json (default: runtime.log_format of the configuration)")
    # its own dest: a verb may have a --config of its own (`install containerd --config`)
    parser.add_argument("--config", dest="cocoon_config", default=None, metavar="PATH",
                        help="the configuration file (default: /etc/cocoon/config.toml, or "
                             "$COCOON_CONFIG); passed on to the VMs' processes")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="accepted for runc compatibility; cgroups live in the guest")
    parser.add_argument("-v", "--version", action="version",
                        version=f"cocoon version {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    registered: set[str] = set()
    if verb in VERBS:
        importlib.import_module(f"cocoon.cli.{VERBS[verb][0]}").register(sub)
        registered.update(sub.choices)
    for name, (_, help_text) in VERBS.items():
        if listing and name not in registered:
            stand_in = sub.add_parser(name, help=help_text, add_help=False)
            stand_in.add_argument("arguments", nargs=argparse.REMAINDER)
            stand_in.set_defaults(stand_in=True)
    return parser


# global options that take a value (as `--root DIR` or `--root=DIR`)
_VALUED = ("--root", "--log", "--log-format", "--config")


def find_verb(argv: Sequence[str]) -> str | None:
    """The verb of a command line, read without argparse; None when there is none, or when a
    help or version flag comes before it (then the whole listing is needed)."""
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help", "-v", "--version"):
            return None
        if arg in _VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def parse(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """A known verb gets a parser with only its own sub-parser (one module imported, a handful
    of parsers built); anything else the whole listing, whose stand-ins find the verb (global
    options and `--help` acting as usual) before a second pass with the verb's own parser."""
    args = list(sys.argv[1:] if argv is None else argv)
    verb = find_verb(args)
    if verb in VERBS:
        parser = build_parser(verb, listing=False)
        return parser, parser.parse_args(args)
    first, _ = build_parser().parse_known_args(args)
    parser = build_parser(first.verb)
    return parser, parser.parse_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse(argv)
    if args.cocoon_config:  # for this process and every one it starts (monitors, shims)
        from cocoon.config.loader import ENV_CONFIG

        os.environ[ENV_CONFIG] = os.path.abspath(args.cocoon_config)
    try:
        ctx = Context.from_args(args, lenient=getattr(args, "lenient_settings", False),
                                quiet=quiet(args))
    except CocoonError as err:  # a broken configuration file: one line, naming file:line:key
        print(f"cocoon: {err}", file=sys.stderr)
        return 1
    logging_on = setup_logging(args, ctx)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
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
        if logging_on and ctx.log_path:
            import logging

            logging.getLogger("cocoon.cli").error("%s", err)
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
