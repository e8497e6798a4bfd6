"""A process's stdin written to the guest with several WriteStdin calls in flight, in order.

Shared by the per-process shim's relay (`cocoon.sandbox.relay`) and the containerd shim's stdin
pump (`cocoon.shim.stdin`). Requests leave in the order the chunks were read and the agent
applies a process's writes in arrival order (its stdin lock is FIFO), so the bytes keep their
order while the host->guest channel and the guest's work overlap; with one call in flight,
each chunk waited for the previous one's round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cocoon.sandbox.agentclient import AgentClient

STDIN_CHUNK = 256 << 10
STDIN_IN_FLIGHT = 4


async def write_pipelined(agent: AgentClient, container_id: str, exec_id: str,
                          chunks: AsyncIterator[bytes], in_flight: int = STDIN_IN_FLIGHT) -> int:
    """WriteStdin every chunk with up to `in_flight` calls outstanding; the bytes written.

    The first failed call's error is raised (the others are cancelled): the process or its
    stdin is gone, and nothing after that chunk can be delivered in order.
    """
    window = asyncio.Semaphore(in_flight)
    sent: list[asyncio.Task[int]] = []
    total = 0

    async def write(data: bytes) -> int:
        try:
            return await agent.write_stdin(container_id, exec_id, data, timeout=None)
        finally:
            window.release()

    try:
        async for data in chunks:
            await window.acquire()
            for task in sent:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            total += sum(t.result() for t in sent if t.done())
            sent = [t for t in sent if not t.done()]
            sent.append(asyncio.create_task(write(data)))
        total += sum(await asyncio.gather(*sent))
        sent = []
    finally:
        for task in sent:
            task.cancel()
    return total
