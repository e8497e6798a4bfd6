"""`cocoon install containerd` and `cocoon uninstall containerd`: the runtime handler in
containerd's configuration (see cocoon.install.containerd)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cocoon.cli.context import Context

TARGETS = ("containerd",)


def register(sub: Any) -> None:
    for verb, action in (("install", "add Cocoon's runtime handler to"),
                         ("uninstall", "remove Cocoon's runtime handler from")):
        parser: argparse.ArgumentParser = sub.add_parser(
            verb, help=f"{action} a container engine's configuration")
        parser.add_argument("target", choices=TARGETS, help="the engine (containerd)")
        parser.add_argument("--config", type=Path, default=None, metavar="PATH",
                            help="containerd's configuration (default: "
                                 "/etc/containerd/config.toml)")
        parser.add_argument("--handler", default="cocoon",
                            help="the CRI runtime handler name (default: cocoon)")
        parser.add_argument("--bin-dir", type=Path, default=None, metavar="DIR",
                            help="where containerd finds the shim: a link to it is made or "
                                 "removed there (default: /usr/local/bin)")
        parser.add_argument("--no-link", action="store_true",
                            help="leave the shim binary alone (it is on containerd's PATH)")
        parser.add_argument("--force", action="store_true",
                            help="replace or remove a handler of that name that cocoon "
                                 "install did not write")
        if verb == "install":
            parser.add_argument("--cocoon-config", type=Path, default=None, metavar="PATH",
                                help="a Cocoon configuration file the handler's VMs use "
                                     "(passed to the shim as the ConfigPath runtime option)")
        parser.set_defaults(func=run, install_verb=verb)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.install import containerd

    config = args.config or containerd.DEFAULT_CONFIG
    bin_dir = None if args.no_link else (args.bin_dir or containerd.DEFAULT_BIN_DIR)
    if args.install_verb == "install":
        outcome = containerd.install(config, handler=args.handler,
                                     cocoon_config=args.cocoon_config, bin_dir=bin_dir,
                                     force=args.force)
    else:
        outcome = containerd.uninstall(config, handler=args.handler, bin_dir=bin_dir,
                                       force=args.force)
    print(outcome.message)
    return 0
