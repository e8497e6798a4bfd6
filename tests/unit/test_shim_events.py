"""Task events forwarded to a real ttrpc Events server, in order, with containerd's type URLs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from google.protobuf import empty_pb2

from cocoon.protocols.gen import containerd_events_pb2 as ev
from cocoon.protocols.gen import containerd_events_service_pb2 as evs
from cocoon.shim import events
from cocoon.shim.events import Publisher, envelope
from cocoon.ttrpc.server import CallContext, Server

EVENTS_SERVICE = evs.DESCRIPTOR.services_by_name["Events"]


class Recorder:
    def __init__(self) -> None:
        self.received: list[evs.Envelope] = []

    async def Forward(self, request: evs.ForwardRequest, ctx: CallContext) -> empty_pb2.Empty:
        self.received.append(request.envelope)
        return empty_pb2.Empty()


def test_envelope_topic_type_url_and_payload() -> None:
    item = envelope("k8s.io", ev.TaskExit(container_id="c", id="c", exit_status=3))
    assert (item.namespace, item.topic) == ("k8s.io", "/tasks/exit")
    assert item.event.type_url == "containerd.events.TaskExit"
    assert ev.TaskExit.FromString(item.event.value).exit_status == 3
    assert item.timestamp.seconds > 0
    assert set(events.TOPICS.values()) == {
        "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/tasks/exec-added",
        "/tasks/exec-started", "/tasks/paused", "/tasks/resumed", "/tasks/oom"}


async def _serve(path: Path, recorder: Recorder) -> Server:
    server = Server()
    server.register_service(EVENTS_SERVICE, recorder)
    await server.start_unix(path)
    return server


def test_events_arrive_in_order_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sock.ttrpc"

    async def scenario() -> list[str]:
        recorder = Recorder()
        server = await _serve(path, recorder)
        publisher = Publisher(f"unix://{path}", "default")
        publisher.start()
        publisher.publish(ev.TaskCreate(container_id="c"))
        publisher.publish(ev.TaskStart(container_id="c"))
        await publisher.flush()
        await server.close()  # containerd goes away ...
        publisher.publish(ev.TaskExit(container_id="c"))
        publisher.publish(ev.TaskDelete(container_id="c"))
        await asyncio.sleep(0.3)
        server = await _serve(path, recorder)  # ... and comes back
        await publisher.flush()
        await publisher.close()
        await server.close()
        assert publisher.sent == 4
        return [e.topic for e in recorder.received]

    assert asyncio.run(scenario()) == ["/tasks/create", "/tasks/start", "/tasks/exit",
                                       "/tasks/delete"]


def test_without_an_address_nothing_is_queued() -> None:
    async def scenario() -> None:
        publisher = Publisher("", "default")
        publisher.publish(ev.TaskOOM(container_id="c"))
        await publisher.flush(timeout=0.1)
        assert publisher.sent == 0

    asyncio.run(scenario())
