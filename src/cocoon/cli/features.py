"""`cocoon features`: what this runtime supports, in the runtime-spec features format."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cocoon.cli.context import Context
from cocoon.linux.caps import CAPABILITIES
from cocoon.linux.mounts import FLAG_OPTIONS, PROPAGATION
from cocoon.oci.default import OCI_VERSION

SECCOMP_ACTIONS = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                   "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"]
SECCOMP_OPERATORS = ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                     "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]


def features() -> dict[str, Any]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": sorted([*FLAG_OPTIONS, *PROPAGATION]),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": sorted(CAPABILITIES),
            "cgroup": {"v1": False, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": SECCOMP_ACTIONS,
                        "operators": SECCOMP_OPERATORS,
                        "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {
            "io.github.cocoon.vm": "every container runs in its own VM with its own kernel",
            # runc's key: checkpoint and restore work (CRIU runs in the guest)
            "org.opencontainers.runc.checkpoint.enabled": "true",
        },
    }


def register(sub: Any) -> None:
    parser = sub.add_parser("features", help="print the features this runtime supports")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    print(json.dumps(features(), indent=2))
    return 0
