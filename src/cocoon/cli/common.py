"""Small helpers shared by the verb modules: signal names, sizes, the runtime for a context."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from cocoon.cli.context import Context
from cocoon.errors import ConfigError

if TYPE_CHECKING:
    from cocoon.runtime.operations import Runtime


def runtime(ctx: Context) -> Runtime:
    """The runtime over the context's state root; imported here, by the verbs that drive VMs,
    and not by those that only read state."""
    from cocoon.runtime.operations import Runtime

    return Runtime(ctx.root, debug=ctx.debug, systemd_cgroup=ctx.systemd_cgroup)


def parse_signal(value: str) -> int:
    """`9`, `KILL` or `SIGKILL` (case-insensitive), as runc accepts them."""
    text = value.strip()
    if text.isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
        raise ConfigError(f"invalid signal {value!r}: numbers run from 1 to 64")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base, _, offset = name.partition("+" if "+" in name else "-")
        if offset.isdigit():
            ref = signal.SIGRTMIN if base == "SIGRTMIN" else signal.SIGRTMAX
            return int(ref) + (int(offset) if "+" in name else -int(offset))
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ConfigError(f"unknown signal {value!r}") from None


def parse_size(value: str) -> int:
    """`512m`, `1g`, `1048576` or `-1` (unlimited), as `runc update` accepts them."""
    text = value.strip().lower()
    if text in ("-1", ""):
        return -1
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    factor = 1
    if text[-1] in units:
        factor = units[text[-1]]
        text = text[:-1]
    elif text.endswith("b") and len(text) > 1 and text[-2] in units:
        factor = units[text[-2]]
        text = text[:-2]
    try:
        return int(float(text) * factor)
    except ValueError:
        raise ConfigError(f"invalid size {value!r}") from None
