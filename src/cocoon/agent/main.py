"""cocoon-agent: PID 1 of the guest.

Boots the guest (pid1), then serves ttrpc on the virtio-serial port for as long as the VM lives:
one session per host connection, waiting for the host again after each. It never exits on its
own: as PID 1, exiting would panic the kernel. DestroySandbox powers the machine off.

The start is measured: the agent's clock starts before anything else is imported, and each
step is logged with the guest's uptime, so the timeline (on the console, and in GetGuestDetails)
shows what the imports cost; under TCG they are the largest part of the agent's start.
(Loading the kernel modules before the imports, so that the devices come up meanwhile, showed
no gain that stood out of the noise of a shared 2-core host; the simpler order stays.)
"""

from __future__ import annotations

import time

# first, so the timeline starts when the agent's code does
STARTED_NS = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from cocoon.agent.service import AgentState

logger = logging.getLogger("cocoon.agent")

def uptime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


async def serve(state: AgentState) -> None:
    import asyncio

    from cocoon.agent import channel
    from cocoon.agent.guestservice import GuestAgentService
    from cocoon.agent.service import AgentService, HealthService
    from cocoon.linux import syscalls as sc
    from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2
    from cocoon.ttrpc.server import Server

    server = Server()
    agent = AgentService(state)
    server.register_service(agent_pb2.DESCRIPTOR.services_by_name["AgentService"], agent)
    server.register_service(health_pb2.DESCRIPTOR.services_by_name["Health"], HealthService())
    server.register_service(guest_pb2.DESCRIPTOR.services_by_name["GuestAgent"],
                            GuestAgentService(agent))
    device = channel.find_port()
    logger.info("agent channel %s at %.3f s", device, uptime())
    port = channel.Port(device)
    while True:
        session = await port.next_session()
        if not state.ready_ns:
            state.ready_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            logger.info("agent ready at %.3f s", state.ready_ns / 1e9)
        else:
            logger.info("host reconnected (session %d)", session.number)
        serving = asyncio.ensure_future(server.serve_connection(
            session.reader, session.writer, peer=f"host session {session.number}"))
        power_off = asyncio.ensure_future(state.power_off_requested.wait())
        await asyncio.wait({serving, power_off}, return_when=asyncio.FIRST_COMPLETED)
        if power_off.done():
            await asyncio.sleep(0.05)  # let the DestroySandbox answer leave
            os.sync()
            sc.power_off()
        power_off.cancel()
        if serving.done() and serving.exception() is not None:
            logger.warning("host session %d failed: %r", session.number, serving.exception())
        port.finish(session)


# Imported now although only some containers need them: a VM saved as a template after this
# point gives its clones these modules loaded, where an import after a restore would read and
# unmarshal them again in every clone.
LATE_IMPORTS = ("seccomp",)


def _import_the_rest() -> None:
    import importlib

    for name in LATE_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError as err:
            logger.warning("cannot import %s: %s", name, err)


def keep_signals_default() -> None:
    """Leave every signal at its default action (SIGPIPE ignored, as Python has it).

    The kernel drops any signal that PID 1 has not asked for (a default action) when it comes
    from inside its own pid namespace: a container without a pid namespace of its own may
    send the agent anything (`kill -INT 1`) and nothing happens. Python's own SIGINT handler
    would turn SIGINT into KeyboardInterrupt, which would end the agent and power the VM off
    with every container in it. SIGCHLD gets the reaper's handler later.
    """
    import signal

    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE):
            continue
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue


def main() -> None:
    from cocoon import log

    keep_signals_default()
    log.setup(os.environ.get("COCOON_AGENT_LOG", "INFO").upper(), stream=sys.stderr)
    logger.info("agent started at %.3f s", STARTED_NS / 1e9)
    import asyncio

    from cocoon.agent import pid1
    from cocoon.agent.process import Reaper
    from cocoon.agent.service import AgentState
    from cocoon.linux import syscalls as sc

    _import_the_rest()
    logger.info("services imported at %.3f s", uptime())
    try:
        pid1.boot()
    except Exception:
        logger.exception("guest setup failed")
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    reaper = Reaper()
    reaper.install(loop)
    state = AgentState(reaper, STARTED_NS)
    while True:
        try:
            loop.run_until_complete(serve(state))
        except Exception:
            logger.exception("agent loop failed; restarting it")
            time.sleep(0.5)


if __name__ == "__main__":
    main()
