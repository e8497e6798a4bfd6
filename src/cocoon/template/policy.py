"""Whether a sandbox starts from a template, and whether a missing one is built for it.

`templates.mode` (`COCOON_TEMPLATES`) chooses: `auto` (the default) uses templates under TCG,
where a cold boot costs seconds, and boots cold under KVM, where it is already fast; `on` uses
them under either; `off` never does. Templates are built on first use for the memory sizes in
`templates.memory_mib` (`COCOON_TEMPLATE_MEMORY`, MiB, comma-separated; by default the default
VM size): a sandbox of
another size uses a template only if one was built for it (`cocoon template build --memory N`)
and boots cold otherwise. Every reason to boot cold is logged at debug level by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocoon.config import current as settings

ENV_MODE = "COCOON_TEMPLATES"
ENV_SIZES = "COCOON_TEMPLATE_MEMORY"
MODES = ("auto", "on", "off")
TEMPLATE_MACHINE = "q35"  # empty PCIe root ports make hot-plug cheap (see docs/templates.md)


@dataclass(frozen=True)
class Choice:
    use: bool          # start from a template when a whole one exists
    build: bool        # and build it first when there is none
    reason: str        # why not, or why this way


def mode(environ: dict[str, str] | None = None) -> str:
    return settings(environ).templates.mode


def auto_sizes(default_mib: int, environ: dict[str, str] | None = None) -> frozenset[int]:
    return frozenset(settings(environ).templates.memory_mib or (default_mib,))


def decide(*, accel: str, memory_mib: int, default_mib: int, custom_initrd: bool = False,
           known_image: bool = True, environ: dict[str, str] | None = None,
           machine: str = TEMPLATE_MACHINE) -> Choice:
    """`custom_initrd`: the sandbox boots an initrd other than the agent's image (test
    variants); it is templated only when asked for (`on`) and the image's digest is known."""
    chosen = mode(environ)
    if chosen == "off":
        return Choice(False, False, "templates are off (templates.mode)")
    if machine != TEMPLATE_MACHINE:
        return Choice(False, False, f"templates are {TEMPLATE_MACHINE} VMs, this one is {machine}")
    if custom_initrd and (chosen != "on" or not known_image):
        return Choice(False, False, "the sandbox boots its own initrd")
    if chosen == "auto" and accel == "kvm":
        return Choice(False, False, "a cold boot under KVM is fast (templates.mode = on, "
                                    f"or {ENV_MODE}=on, to use templates anyway)")
    if memory_mib in auto_sizes(default_mib, environ):
        return Choice(True, True, f"templates of {memory_mib} MiB are built on first use")
    return Choice(True, False, f"templates of {memory_mib} MiB are not built on first use "
                               "(templates.memory_mib); one built by `cocoon template build` "
                               "is used")
