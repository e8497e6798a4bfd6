"""`cocoon check`: is the configuration valid, can this host run VMs, with which acceleration."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.context import Context


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "check", help="check that this host can run Cocoon VMs")
    parser.add_argument("--reprobe", action="store_true",
                        help="ignore the cached acceleration probe and run it again")
    parser.add_argument("--config-only", action="store_true",
                        help="validate the configuration file only (no host checks)")
    parser.set_defaults(func=run, lenient_settings=True)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from cocoon.config import current
    from cocoon.config.loader import summary
    from cocoon.errors import SettingsError
    from cocoon.hypervisor import hostcheck

    try:
        config = hostcheck.Check("config", "ok", summary(current()))
    except SettingsError as err:  # the host checks read the settings too: they wait for a fix
        config = hostcheck.Check("config", "fail", str(err))
    if args.config_only or config.verdict == "fail":
        print(f"config  {config.verdict}  {config.detail}")
        return 0 if config.verdict == "ok" else 1
    host = hostcheck.check_host(reprobe=args.reprobe)
    report = hostcheck.HostReport((config, *host.checks), host.decision)
    print(report.render())
    return 0 if report.ok else 1
