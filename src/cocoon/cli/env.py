"""`cocoon env`: where Cocoon keeps things and what it would run with, on this host."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from cocoon import __version__
from cocoon.cli.context import Context
from cocoon.cli.version import qemu_version


def configuration() -> dict[str, Any]:
    """The file read and every setting's effective value with where it came from."""
    from cocoon.config import current
    from cocoon.config.loader import config_path
    from cocoon.config.reference import effective

    settings = current()
    path, _ = config_path(os.environ)
    return {"file": str(path) if settings.path else f"{path} (absent: defaults)",
            "settings": {name: {"value": value, "source": source}
                         for name, value, source in effective(settings)}}


def environment(ctx: Context) -> dict[str, Any]:
    from cocoon.config import current as current_settings
    from cocoon.errors import CocoonError
    from cocoon.guest import assets
    from cocoon.hypervisor import accel
    from cocoon.sandbox.layout import vm_root

    kernel = assets.find_kernel()
    cache = assets.default_cache_dir()
    decision = None
    if kernel is not None:  # the probe boots Debian's kernel, whatever the VMs boot
        decision = accel.load_cached(cache, accel.probe_key(kernel.release))
    hypervisor = current_settings().hypervisor
    guest_kernel, problem = kernel, None
    if hypervisor.kernel is not None:  # the VMs boot this one (hypervisor.kernel)
        try:
            guest_kernel = assets.custom_kernel(hypervisor.kernel, hypervisor.kernel_modules)
        except CocoonError as err:
            guest_kernel, problem = None, str(err)
    image = assets.find_guest_image(kernel=guest_kernel) if guest_kernel else None
    return {
        "runtime": {"version": __version__, "python": sys.version.split()[0],
                    "executable": sys.argv[0]},
        "paths": {"state_root": str(ctx.root), "vm_root": str(vm_root()),
                  "asset_cache": str(cache)},
        "host": {"kernel": platform.release(), "qemu": qemu_version(),
                 "kvm_device": os.path.exists("/dev/kvm"),
                 "vhost_vsock": os.path.exists("/dev/vhost-vsock")},
        "guest": {"kernel": guest_kernel.release if guest_kernel else problem,
                  "kernel_package": guest_kernel.package_version if guest_kernel else None,
                  "kernel_file": str(guest_kernel.vmlinuz) if guest_kernel else None,
                  "image": str(image.initrd) if image else None,
                  "image_digest": image.digest[:16] if image else None},
        "acceleration": ({"accel": decision.accel, "cpu": decision.cpu_model,
                          "reason": decision.reason} if decision else
                         "not probed yet (run cocoon check)"),
        "config": configuration(),
    }


def register(sub: Any) -> None:
    parser = sub.add_parser("env", help="show Cocoon's paths, versions and settings")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    env = environment(ctx)
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    config = env.pop("config")
    for section, values in env.items():
        print(f"[{section}]")
        if isinstance(values, dict):
            for key, value in values.items():
                print(f"  {key} = {value}")
        else:
            print(f"  {values}")
    print(f"[config]\n  file = {config['file']}")
    rows = [(f"{name} = {item['value']}", item["source"])
            for name, item in config["settings"].items()]
    width = max(len(setting) for setting, _ in rows)
    for setting, source in rows:
        print(f"  {setting:<{width}}  # {source}")
    return 0
