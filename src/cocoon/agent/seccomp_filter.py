"""The OCI seccomp profile as a kernel filter, built with libseccomp's Python binding.

Podman sends a profile with every container, so it is applied, not ignored: what cannot be
honoured (a notify action, an unknown action or operator) is refused with an error naming it.
Syscalls that this kernel's libseccomp does not know are skipped, as runc does.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
from collections.abc import Mapping
from typing import Any

_ARCHES = {
    "SCMP_ARCH_X86_64": "X86_64", "SCMP_ARCH_X86": "X86", "SCMP_ARCH_X32": "X32",
    "SCMP_ARCH_AARCH64": "AARCH64", "SCMP_ARCH_ARM": "ARM",
}
_OPS = {
    "SCMP_CMP_NE": "NE", "SCMP_CMP_LT": "LT", "SCMP_CMP_LE": "LE", "SCMP_CMP_EQ": "EQ",
    "SCMP_CMP_GE": "GE", "SCMP_CMP_GT": "GT", "SCMP_CMP_MASKED_EQ": "MASKED_EQ",
}


class SeccompError(ValueError):
    """The profile asks for something that cannot be applied."""


def _action(seccomp: Any, name: str, errno_ret: int | None, where: str) -> Any:
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_mod.EPERM if errno_ret is None else errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    if name == "SCMP_ACT_TRACE":
        return seccomp.TRACE(errno_mod.EPERM if errno_ret is None else errno_ret)
    raise SeccompError(f"{where}: seccomp action {name!r} is not supported")


def build(profile: Mapping[str, Any]) -> Any:
    """Return a loaded-ready `seccomp.SyscallFilter` for the OCI `linux.seccomp` object."""
    import seccomp

    where = "linux.seccomp"
    default = _action(seccomp, profile.get("defaultAction", ""), profile.get("defaultErrnoRet"),
                      f"{where}.defaultAction")
    flt = seccomp.SyscallFilter(defaction=default)
    # libseccomp sets no_new_privs when it loads a filter unless told not to; the process's
    # `noNewPrivileges` decides that flag (runc's behaviour), not the filter
    flt.set_attr(seccomp.Attr.CTL_NNP, 0)
    for arch in profile.get("architectures") or []:
        name = _ARCHES.get(arch)
        if name is None:
            continue
        arch_value = getattr(seccomp.Arch, name)
        if arch_value != seccomp.Arch.NATIVE and arch_value != seccomp.system_arch():
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                flt.add_arch(arch_value)
    for index, rule in enumerate(profile.get("syscalls") or []):
        here = f"{where}.syscalls[{index}]"
        action = _action(seccomp, rule.get("action", ""), rule.get("errnoRet"), here)
        if action == default:
            continue  # libseccomp refuses rules equal to the default action
        args = []
        for arg_index, arg in enumerate(rule.get("args") or []):
            op = _OPS.get(arg.get("op", ""))
            if op is None:
                raise SeccompError(f"{here}.args[{arg_index}]: unknown operator {arg.get('op')!r}")
            values = [int(arg.get("value", 0))]
            if op == "MASKED_EQ":
                values.append(int(arg.get("valueTwo", 0)))
            args.append(seccomp.Arg(int(arg.get("index", 0)), getattr(seccomp, op), *values))
        for name in rule.get("names") or []:
            try:
                flt.add_rule(action, name, *args)
            except (RuntimeError, ValueError, OSError):
                # unknown to this libseccomp or kernel: skipped, as runc does
                continue
    return flt


def apply(profile: Mapping[str, Any]) -> None:
    build(profile).load()
