"""Whether a sandbox starts from a template, and whether a missing one is built for it.

`COCOON_TEMPLATES` chooses: `auto` (the default) uses templates under TCG, where a cold boot
costs seconds, and boots cold under KVM, where it is already fast; `on` uses them under either;
`off` never does. Templates are built on first use for the memory sizes in
`COCOON_TEMPLATE_MEMORY` (MiB, comma-separated; by default the default VM size): a sandbox of
another size uses a template only if one was built for it (`cocoon template build --memory N`)
and boots cold otherwise. Every reason to boot cold is logged at debug level by the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cocoon.errors import ConfigError

ENV_MODE = "COCOON_TEMPLATES"
ENV_SIZES = "COCOON_TEMPLATE_MEMORY"
MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Choice:
    use: bool          # start from a template when a whole one exists
    build: bool        # and build it first when there is none
    reason: str        # why not, or why this way


def mode(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get(ENV_MODE, "auto").strip().lower() or "auto"
    aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
    value = aliases.get(value, value)
    if value not in MODES:
        raise ConfigError(f"{ENV_MODE} must be one of {', '.join(MODES)}, not {value!r}")
    return value


def auto_sizes(default_mib: int, environ: dict[str, str] | None = None) -> frozenset[int]:
    env = os.environ if environ is None else environ
    text = env.get(ENV_SIZES, "").strip()
    if not text:
        return frozenset({default_mib})
    try:
        return frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{ENV_SIZES} must list memory sizes in MiB, e.g. 256,512, "
                          f"not {text!r}") from None


def decide(*, accel: str, memory_mib: int, default_mib: int, custom_initrd: bool = False,
           known_image: bool = True, environ: dict[str, str] | None = None) -> Choice:
    """`custom_initrd`: the sandbox boots an initrd other than the agent's image (test
    variants); it is templated only when asked for (`on`) and the image's digest is known."""
    chosen = mode(environ)
    if chosen == "off":
        return Choice(False, False, f"templates are off ({ENV_MODE}=off)")
    if custom_initrd and (chosen != "on" or not known_image):
        return Choice(False, False, "the sandbox boots its own initrd")
    if chosen == "auto" and accel == "kvm":
        return Choice(False, False, f"a cold boot under KVM is fast ({ENV_MODE}=on to use "
                                    "templates anyway)")
    if memory_mib in auto_sizes(default_mib, environ):
        return Choice(True, True, f"templates of {memory_mib} MiB are built on first use")
    return Choice(True, False, f"templates of {memory_mib} MiB are not built on first use "
                               f"({ENV_SIZES}); one built by `cocoon template build` is used")
