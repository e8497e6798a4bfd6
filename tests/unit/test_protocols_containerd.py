"""containerd's shim, event and metrics protos: names as containerd resolves them, numbers on the
wire as shim.proto, task.proto, events and cgroups metrics fix them."""

from __future__ import annotations

from google.protobuf import any_pb2, timestamp_pb2

from cocoon.protocols.gen import (
    cgroups_v2_metrics_pb2,
    containerd_events_pb2,
    containerd_events_service_pb2,
    containerd_mount_pb2,
    containerd_task_pb2,
    containerd_types_task_pb2,
)
from tests.unit.test_protocols_agent import EMPTY, lfield, methods, vfield

T = "containerd.task.v2."

TASK_METHODS = {
    "State": (T + "StateRequest", T + "StateResponse"),
    "Create": (T + "CreateTaskRequest", T + "CreateTaskResponse"),
    "Start": (T + "StartRequest", T + "StartResponse"),
    "Delete": (T + "DeleteRequest", T + "DeleteResponse"),
    "Pids": (T + "PidsRequest", T + "PidsResponse"),
    "Pause": (T + "PauseRequest", EMPTY),
    "Resume": (T + "ResumeRequest", EMPTY),
    "Checkpoint": (T + "CheckpointTaskRequest", EMPTY),
    "Kill": (T + "KillRequest", EMPTY),
    "Exec": (T + "ExecProcessRequest", EMPTY),
    "ResizePty": (T + "ResizePtyRequest", EMPTY),
    "CloseIO": (T + "CloseIORequest", EMPTY),
    "Update": (T + "UpdateTaskRequest", EMPTY),
    "Wait": (T + "WaitRequest", T + "WaitResponse"),
    "Stats": (T + "StatsRequest", T + "StatsResponse"),
    "Connect": (T + "ConnectRequest", T + "ConnectResponse"),
    "Shutdown": (T + "ShutdownRequest", EMPTY),
}


def test_task_service() -> None:
    service = containerd_task_pb2.DESCRIPTOR.services_by_name["Task"]
    assert service.full_name == "containerd.task.v2.Task"
    assert methods(containerd_task_pb2, "Task") == TASK_METHODS


def test_create_task_request_golden() -> None:
    request = containerd_task_pb2.CreateTaskRequest(
        id="c1", bundle="/run/containerd/io.containerd.runtime.v2.task/default/c1",
        rootfs=[containerd_mount_pb2.Mount(type="overlay", source="overlay",
                                           options=["workdir=/w", "upperdir=/u"])],
        stdout="/run/containerd/fifo/c1-stdout")
    assert request.SerializeToString() == (
        lfield(1, "c1") + lfield(2, "/run/containerd/io.containerd.runtime.v2.task/default/c1")
        + lfield(3, lfield(1, "overlay") + lfield(2, "overlay") + lfield(4, "workdir=/w")
                 + lfield(4, "upperdir=/u"))
        + lfield(6, "/run/containerd/fifo/c1-stdout"))


def test_task_messages_golden() -> None:
    exited = timestamp_pb2.Timestamp(seconds=1700000000, nanos=5)
    stamp = vfield(1, 1700000000) + vfield(2, 5)
    cases = [
        (containerd_task_pb2.ExecProcessRequest(
            id="c", exec_id="e", terminal=True, stderr="/f/err",
            spec=any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                             value=b"{}")),
         lfield(1, "c") + lfield(2, "e") + vfield(3, 1) + lfield(6, "/f/err")
         + lfield(7, lfield(1, "types.containerd.io/opencontainers/runtime-spec/1/Process")
                  + lfield(2, b"{}"))),
        (containerd_task_pb2.KillRequest(id="c", exec_id="e", signal=9, all=True),
         lfield(1, "c") + lfield(2, "e") + vfield(3, 9) + vfield(4, 1)),
        (containerd_task_pb2.StateResponse(
            id="c", pid=42, status=containerd_types_task_pb2.STOPPED, terminal=True,
            exit_status=137, exited_at=exited, exec_id="e"),
         lfield(1, "c") + vfield(3, 42) + vfield(4, 3) + vfield(8, 1) + vfield(9, 137)
         + lfield(10, stamp) + lfield(11, "e")),
        (containerd_task_pb2.WaitResponse(exit_status=7, exited_at=exited),
         vfield(1, 7) + lfield(2, stamp)),
        (containerd_task_pb2.DeleteResponse(pid=42, exit_status=143, exited_at=exited),
         vfield(1, 42) + vfield(2, 143) + lfield(3, stamp)),
        (containerd_task_pb2.ConnectResponse(shim_pid=10, task_pid=42, version="cocoon"),
         vfield(1, 10) + vfield(2, 42) + lfield(3, "cocoon")),
        (containerd_task_pb2.ShutdownRequest(id="c", now=True), lfield(1, "c") + vfield(2, 1)),
        (containerd_task_pb2.ResizePtyRequest(id="c", width=80, height=24),
         lfield(1, "c") + vfield(3, 80) + vfield(4, 24)),
        (containerd_task_pb2.CloseIORequest(id="c", stdin=True), lfield(1, "c") + vfield(3, 1)),
        (containerd_task_pb2.PidsResponse(
            processes=[containerd_types_task_pb2.ProcessInfo(pid=7)]),
         lfield(1, vfield(1, 7))),
    ]
    for message, golden in cases:
        assert message.SerializeToString() == golden, type(message).__name__


def test_status_enum() -> None:
    names = containerd_types_task_pb2.Status.keys()
    assert names == ["UNKNOWN", "CREATED", "RUNNING", "STOPPED", "PAUSED", "PAUSING"]
    assert containerd_types_task_pb2.Status.values() == [0, 1, 2, 3, 4, 5]


EVENTS = ["TaskCreate", "TaskStart", "TaskDelete", "TaskIO", "TaskExit", "TaskOOM",
          "TaskExecAdded", "TaskExecStarted", "TaskPaused", "TaskResumed", "TaskCheckpointed"]


def test_event_full_names_are_the_type_urls_containerd_decodes() -> None:
    for name in EVENTS:
        message = getattr(containerd_events_pb2, name)
        assert message.DESCRIPTOR.full_name == f"containerd.events.{name}"
    # containerd's typeurl wants the bare full name; Any.Pack() would add a "/" before it
    # (type.googleapis.com/... by default), so publishers set type_url themselves.
    packed = any_pb2.Any()
    packed.Pack(containerd_events_pb2.TaskOOM(container_id="c"), type_url_prefix="")
    assert packed.type_url == "/containerd.events.TaskOOM"


def test_event_messages_golden() -> None:
    exited = timestamp_pb2.Timestamp(seconds=3)
    cases = [
        (containerd_events_pb2.TaskCreate(
            container_id="c", bundle="/b", io=containerd_events_pb2.TaskIO(stdout="/o"), pid=9),
         lfield(1, "c") + lfield(2, "/b") + lfield(4, lfield(2, "/o")) + vfield(6, 9)),
        (containerd_events_pb2.TaskStart(container_id="c", pid=9),
         lfield(1, "c") + vfield(2, 9)),
        (containerd_events_pb2.TaskExit(container_id="c", id="c", pid=9, exit_status=1,
                                        exited_at=exited),
         lfield(1, "c") + lfield(2, "c") + vfield(3, 9) + vfield(4, 1) + lfield(5, vfield(1, 3))),
        (containerd_events_pb2.TaskDelete(container_id="c", pid=9, exit_status=1,
                                          exited_at=exited, id="e"),
         lfield(1, "c") + vfield(2, 9) + vfield(3, 1) + lfield(4, vfield(1, 3)) + lfield(5, "e")),
        (containerd_events_pb2.TaskExecStarted(container_id="c", exec_id="e", pid=9),
         lfield(1, "c") + lfield(2, "e") + vfield(3, 9)),
    ]
    for message, golden in cases:
        assert message.SerializeToString() == golden, type(message).__name__


def test_events_forward() -> None:
    assert methods(containerd_events_service_pb2, "Events") == {
        "Forward": ("containerd.services.events.ttrpc.v1.ForwardRequest", EMPTY)}
    service = containerd_events_service_pb2.DESCRIPTOR.services_by_name["Events"]
    assert service.full_name == "containerd.services.events.ttrpc.v1.Events"
    event = any_pb2.Any(type_url="containerd.events.TaskStart",
                        value=containerd_events_pb2.TaskStart(container_id="c").SerializeToString())
    request = containerd_events_service_pb2.ForwardRequest(
        envelope=containerd_events_service_pb2.Envelope(
            timestamp=timestamp_pb2.Timestamp(seconds=1), namespace="default",
            topic="/tasks/start", event=event))
    assert request.SerializeToString() == lfield(1, (
        lfield(1, vfield(1, 1)) + lfield(2, "default") + lfield(3, "/tasks/start")
        + lfield(4, lfield(1, "containerd.events.TaskStart") + lfield(2, lfield(1, "c")))))


def test_cgroups_v2_metrics() -> None:
    assert cgroups_v2_metrics_pb2.Metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v2.Metrics"
    metrics = cgroups_v2_metrics_pb2.Metrics(
        pids=cgroups_v2_metrics_pb2.PidsStat(current=3, limit=32),
        cpu=cgroups_v2_metrics_pb2.CPUStat(usage_usec=1000, user_usec=600, system_usec=400),
        memory=cgroups_v2_metrics_pb2.MemoryStat(anon=4096, usage=8192, usage_limit=1 << 26),
        io=cgroups_v2_metrics_pb2.IOStat(usage=[cgroups_v2_metrics_pb2.IOEntry(
            major=254, minor=0, rbytes=512)]),
        memory_events=cgroups_v2_metrics_pb2.MemoryEvents(oom_kill=1))
    assert metrics.SerializeToString() == (
        lfield(1, vfield(1, 3) + vfield(2, 32))
        + lfield(2, vfield(1, 1000) + vfield(2, 600) + vfield(3, 400))
        + lfield(4, vfield(1, 4096) + vfield(32, 8192) + vfield(33, 1 << 26))
        + lfield(6, lfield(1, vfield(1, 254) + vfield(3, 512)))
        + lfield(8, vfield(5, 1)))
