"""Checks on what the guest answers, for the answers the host keeps or passes on.

The guest is not trusted: its agent may lie. An answer that breaks a bound is refused whole
with an `AgentError` naming the field, before any of it reaches the monitor's status, the ready
report (read through a 64 KiB pipe), `cocoon state` or containerd's events.

- An OOM event names a container by id: an id as a container id may be (what the runtime
  itself accepts, `cocoon.oci.state.validate_id`); whether it is one of the caller's
  containers is the caller's check (the containerd shim knows its pod's).
- Guest details: the kernel release and agent version printable and at most 64 characters
  (the kernel's own bound on a release), the boot id a UUID as the kernel writes it, the
  memory sizes and times within bounds a real guest cannot reach, in the order they happen
  (agent started, then ready, then this answer), the handler lists short.
"""

from __future__ import annotations

import re

from cocoon.errors import AgentError, ConfigError
from cocoon.oci.state import validate_id
from cocoon.protocols.gen import agent_pb2

TEXT_LIMIT = 64             # __NEW_UTS_LEN: a kernel release is at most this long
LIST_LIMIT = 32             # entries of each of the agent's feature lists
MEMORY_LIMIT = 1 << 46      # bytes: 64 TiB, beyond any VM the host can give
UPTIME_LIMIT = 100 * 365 * 86400 * 10**9  # nanoseconds: a century
BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PRINTABLE = re.compile(r"[\x21-\x7e]*")  # no spaces or control characters either


def oom_container(container_id: str) -> str:
    """The container id of an OOM event, if it can be a container id at all."""
    try:
        return validate_id(container_id)
    except ConfigError as err:
        raise AgentError(f"the guest's OOM event names no container: {_quote(container_id)}"
                         ) from err


def guest_details(details: agent_pb2.GuestDetailsResponse) -> agent_pb2.GuestDetailsResponse:
    """`details`, once every field is within its bounds."""
    _text("kernel release", details.kernel_release)
    _text("agent version", details.agent_details.version)
    if details.boot_id and not BOOT_ID.fullmatch(details.boot_id):
        raise AgentError(f"the guest's boot id is not a UUID: {_quote(details.boot_id)}")
    agent = details.agent_details
    for name, items in (("device handlers", agent.device_handlers),
                        ("storage handlers", agent.storage_handlers),
                        ("extra features", agent.extra_features)):
        if len(items) > LIST_LIMIT:
            raise AgentError(f"the guest names {len(items)} {name}: at most {LIST_LIMIT}")
        for item in items:
            _text(name[:-1], item)
    for name, value in (("memory size", details.mem_total_bytes),
                        ("memory block size", details.mem_block_size_bytes)):
        if value > MEMORY_LIMIT:
            raise AgentError(f"the guest's {name} is {value} bytes: at most {MEMORY_LIMIT}")
    times = (details.agent_started_ns, details.agent_ready_ns, details.uptime_ns)
    if details.uptime_ns > UPTIME_LIMIT or list(times) != sorted(times):
        raise AgentError("the guest's times are out of order or out of range (agent started "
                         f"{times[0]} ns, ready {times[1]} ns, uptime {times[2]} ns)")
    return details


def _text(name: str, value: str) -> None:
    if len(value) > TEXT_LIMIT or not PRINTABLE.fullmatch(value):
        raise AgentError(f"the guest's {name} is not printable text of at most {TEXT_LIMIT} "
                         f"characters: {_quote(value)}")


def _quote(value: str) -> str:
    """The start of what the guest said, safe for a one-line message."""
    shown = repr(value[:40])
    return f"{shown}... ({len(value)} characters)" if len(value) > 40 else shown
