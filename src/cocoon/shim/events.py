"""Task events to containerd: Events.Forward on containerd's ttrpc socket (TTRPC_ADDRESS).

Events leave in the order they were published, one at a time, through one queue: containerd
(and CRI above it) rely on create < start < exit < delete for a task. containerd decodes an
event by the type URL of its Any, which must be the bare message name
(`containerd.events.TaskExit`): `Any.Pack` would prefix it, so it is set by hand. While
containerd is away (restarting), an event is retried for a while, then dropped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from cocoon.errors import CocoonError, RPCError
from cocoon.protocols.gen import containerd_events_pb2 as ev
from cocoon.protocols.gen import containerd_events_service_pb2 as evs
from cocoon.ttrpc.client import Client
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.shim.events")

SERVICE = "containerd.services.events.ttrpc.v1.Events"
RETRY_FOR = 30.0
CALL_TIMEOUT = 10.0
RETRYABLE = (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED)

TOPICS: dict[type[Message], str] = {
    ev.TaskCreate: "/tasks/create",
    ev.TaskStart: "/tasks/start",
    ev.TaskExit: "/tasks/exit",
    ev.TaskDelete: "/tasks/delete",
    ev.TaskExecAdded: "/tasks/exec-added",
    ev.TaskExecStarted: "/tasks/exec-started",
    ev.TaskPaused: "/tasks/paused",
    ev.TaskResumed: "/tasks/resumed",
    ev.TaskOOM: "/tasks/oom",
}


def timestamp(seconds: float | None = None) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns() if seconds is None else int(seconds * 1e9))
    return stamp


def envelope(namespace: str, event: Message, at: float | None = None) -> evs.Envelope:
    """The envelope containerd expects for `event` (topic from its type)."""
    topic = TOPICS[type(event)]
    payload = any_pb2.Any(type_url=event.DESCRIPTOR.full_name,
                          value=event.SerializeToString())
    return evs.Envelope(timestamp=timestamp(at), namespace=namespace, topic=topic,
                        event=payload)


class Publisher:
    """Forwards events to containerd in order; `publish` never blocks or fails."""

    def __init__(self, ttrpc_address: str, namespace: str) -> None:
        self.address = ttrpc_address.removeprefix("unix://")
        self.namespace = namespace
        self._queue: asyncio.Queue[evs.Envelope] = asyncio.Queue()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    def publish(self, event: Message) -> None:
        if not self.address:
            return
        logger.debug("event %s %s", TOPICS[type(event)], _brief(event))
        self._queue.put_nowait(envelope(self.namespace, event))

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued event has been sent (or given up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._send(item)
            finally:
                self._queue.task_done()

    async def _send(self, item: evs.Envelope) -> None:
        deadline = time.monotonic() + RETRY_FOR
        delay = 0.05
        while True:
            try:
                if self._client is None or self._client.closed:
                    self._client = await Client.connect_unix(self.address, timeout=5.0)
                await self._client.call(SERVICE, "Forward", evs.ForwardRequest(envelope=item),
                                        empty_pb2.Empty, timeout=CALL_TIMEOUT)
                self.sent += 1
                return
            except (CocoonError, OSError) as err:
                await self._disconnect()
                final = isinstance(err, RPCError) and err.code not in RETRYABLE
                if final or time.monotonic() >= deadline:
                    logger.warning("event %s not delivered to containerd: %s", item.topic, err)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


def _brief(event: Message) -> str:
    return " ".join(f"{field.name}={value}" for field, value in event.ListFields()
                    if field.name in ("container_id", "id", "exec_id", "exit_status"))
