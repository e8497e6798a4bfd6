"""agent.proto and health.proto: Kata's service, method and message shapes, checked on the wire.

The golden encodings are built by hand from the field numbers (tag = number << 3 | wire type),
so a renumbered field fails here even if our code and the generated code agree with each other.
"""

from __future__ import annotations

import pytest
from google.protobuf import empty_pb2
from google.protobuf.descriptor import FileDescriptor

from cocoon.protocols.gen import agent_pb2, health_pb2, kata_oci_pb2, kata_types_pb2


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def vfield(number: int, value: int) -> bytes:
    """A varint field (wire type 0); negative int32/int64 values use ten bytes."""
    return varint(number << 3) + varint(value & (2**64 - 1))


def lfield(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (wire type 2): string, bytes or embedded message."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def methods(module: object, service: str) -> dict[str, tuple[str, str]]:
    """{method: (input type, output type)} by full name, as a ttrpc peer sees them."""
    descriptor: FileDescriptor = module.DESCRIPTOR  # type: ignore[attr-defined]
    found = descriptor.services_by_name[service]
    return {m.name: (m.input_type.full_name, m.output_type.full_name) for m in found.methods}


EMPTY = "google.protobuf.Empty"

AGENT_METHODS = {
    "CreateContainer": ("grpc.CreateContainerRequest", EMPTY),
    "StartContainer": ("grpc.StartContainerRequest", EMPTY),
    "RemoveContainer": ("grpc.RemoveContainerRequest", EMPTY),
    "ExecProcess": ("grpc.ExecProcessRequest", EMPTY),
    "SignalProcess": ("grpc.SignalProcessRequest", EMPTY),
    "WaitProcess": ("grpc.WaitProcessRequest", "grpc.WaitProcessResponse"),
    "ListProcesses": ("grpc.ListProcessesRequest", "grpc.ListProcessesResponse"),
    "UpdateContainer": ("grpc.UpdateContainerRequest", EMPTY),
    "StatsContainer": ("grpc.StatsContainerRequest", "grpc.StatsContainerResponse"),
    "PauseContainer": ("grpc.PauseContainerRequest", EMPTY),
    "ResumeContainer": ("grpc.ResumeContainerRequest", EMPTY),
    "WriteStdin": ("grpc.WriteStreamRequest", "grpc.WriteStreamResponse"),
    "ReadStdout": ("grpc.ReadStreamRequest", "grpc.ReadStreamResponse"),
    "ReadStderr": ("grpc.ReadStreamRequest", "grpc.ReadStreamResponse"),
    "CloseStdin": ("grpc.CloseStdinRequest", EMPTY),
    "TtyWinResize": ("grpc.TtyWinResizeRequest", EMPTY),
    "UpdateInterface": ("grpc.UpdateInterfaceRequest", "types.Interface"),
    "UpdateRoutes": ("grpc.UpdateRoutesRequest", "grpc.Routes"),
    "ListInterfaces": ("grpc.ListInterfacesRequest", "grpc.Interfaces"),
    "ListRoutes": ("grpc.ListRoutesRequest", "grpc.Routes"),
    "AddARPNeighbors": ("grpc.AddARPNeighborsRequest", EMPTY),
    "GetMetrics": ("grpc.GetMetricsRequest", "grpc.Metrics"),
    "CreateSandbox": ("grpc.CreateSandboxRequest", EMPTY),
    "DestroySandbox": ("grpc.DestroySandboxRequest", EMPTY),
    "OnlineCPUMem": ("grpc.OnlineCPUMemRequest", EMPTY),
    "ReseedRandomDev": ("grpc.ReseedRandomDevRequest", EMPTY),
    "GetGuestDetails": ("grpc.GuestDetailsRequest", "grpc.GuestDetailsResponse"),
    "MemHotplugByProbe": ("grpc.MemHotplugByProbeRequest", EMPTY),
    "SetGuestDateTime": ("grpc.SetGuestDateTimeRequest", EMPTY),
    "CopyFile": ("grpc.CopyFileRequest", EMPTY),
    "GetOOMEvent": ("grpc.GetOOMEventRequest", "grpc.OOMEvent"),
}


def test_agent_service_has_kata_methods_and_types() -> None:
    assert agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name == "grpc.AgentService"
    assert methods(agent_pb2, "AgentService") == AGENT_METHODS


def test_health_service() -> None:
    assert methods(health_pb2, "Health") == {
        "Check": ("grpc.CheckRequest", "grpc.HealthCheckResponse"),
        "Version": ("grpc.CheckRequest", "grpc.VersionCheckResponse"),
    }
    assert health_pb2.HealthCheckResponse.SERVING == 1
    assert health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING) \
        .SerializeToString() == vfield(1, 2)


def test_create_container_request_golden() -> None:
    spec = kata_oci_pb2.Spec(Version="1.1.0", Root=kata_oci_pb2.Root(Path="/run/c1/rootfs"))
    request = agent_pb2.CreateContainerRequest(
        container_id="c1", exec_id="c1",
        storages=[agent_pb2.Storage(driver="virtio-fs", source="cocoon", fstype="virtiofs",
                                    mount_point="/run/cocoon/shared")],
        OCI=spec, sandbox_pidns=True)
    assert request.SerializeToString() == (
        lfield(1, "c1") + lfield(2, "c1")
        + lfield(5, lfield(1, "virtio-fs") + lfield(3, "cocoon") + lfield(4, "virtiofs")
                 + lfield(6, "/run/cocoon/shared"))
        + lfield(6, lfield(1, "1.1.0") + lfield(3, lfield(1, "/run/c1/rootfs")))
        + vfield(7, 1))


GOLDEN = [
    (agent_pb2.ExecProcessRequest(container_id="c", exec_id="e",
                                  process=kata_oci_pb2.Process(Args=["ls"], Cwd="/")),
     lfield(1, "c") + lfield(2, "e") + lfield(4, lfield(4, "ls") + lfield(6, "/"))),
    (agent_pb2.SignalProcessRequest(container_id="c", signal=15),
     lfield(1, "c") + vfield(3, 15)),
    (agent_pb2.WaitProcessResponse(status=-1), vfield(1, -1)),
    (agent_pb2.WriteStreamRequest(container_id="c", exec_id="e", data=b"\x00hi"),
     lfield(1, "c") + lfield(2, "e") + lfield(3, b"\x00hi")),
    (agent_pb2.ReadStreamRequest(container_id="c", len=4096),
     lfield(1, "c") + vfield(3, 4096)),
    (agent_pb2.TtyWinResizeRequest(container_id="c", exec_id="e", row=24, column=80),
     lfield(1, "c") + lfield(2, "e") + vfield(3, 24) + vfield(4, 80)),
    (agent_pb2.RemoveContainerRequest(container_id="c", timeout=10),
     lfield(1, "c") + vfield(2, 10)),
    (agent_pb2.ListProcessesRequest(container_id="c", format="json", args=["-ef"]),
     lfield(1, "c") + lfield(2, "json") + lfield(3, "-ef")),
    (agent_pb2.ReseedRandomDevRequest(data=b"\x01\x02"), lfield(2, b"\x01\x02")),
    (agent_pb2.SetGuestDateTimeRequest(Sec=1700000000, Usec=5),
     vfield(1, 1700000000) + vfield(2, 5)),
    (agent_pb2.CopyFileRequest(path="/run/x", file_size=3, file_mode=0o644, uid=-1, offset=0,
                               data=b"abc"),
     lfield(1, "/run/x") + vfield(2, 3) + vfield(3, 0o644) + vfield(5, -1) + lfield(8, b"abc")),
    (agent_pb2.OOMEvent(container_id="c"), lfield(1, "c")),
    (agent_pb2.GuestDetailsResponse(mem_block_size_bytes=1 << 27,
                                    agent_details=agent_pb2.AgentDetails(version="0.1",
                                                                         init_daemon=True)),
     vfield(1, 1 << 27) + lfield(2, lfield(1, "0.1") + vfield(2, 1))),
    (agent_pb2.CreateSandboxRequest(hostname="pod", sandbox_id="s1", sandbox_pidns=True),
     lfield(1, "pod") + vfield(4, 1) + lfield(5, "s1")),
]


@pytest.mark.parametrize(("message", "golden"), GOLDEN,
                         ids=[type(message).__name__ for message, _ in GOLDEN])
def test_agent_messages_golden(message: object, golden: bytes) -> None:
    assert message.SerializeToString() == golden  # type: ignore[attr-defined]


def test_network_types_golden() -> None:
    interface = kata_types_pb2.Interface(
        device="eth0", name="eth0", mtu=1500, hwAddr="02:42:ac:11:00:02",
        IPAddresses=[kata_types_pb2.IPAddress(family=kata_types_pb2.v4, address="10.88.0.2",
                                              mask="16")])
    assert interface.SerializeToString() == (
        lfield(1, "eth0") + lfield(2, "eth0") + lfield(3, lfield(2, "10.88.0.2") + lfield(3, "16"))
        + vfield(4, 1500) + lfield(5, "02:42:ac:11:00:02"))
    route = kata_types_pb2.Route(dest="0.0.0.0/0", gateway="10.88.0.1", device="eth0",
                                 family=kata_types_pb2.v6, flags=4)
    assert route.SerializeToString() == (
        lfield(1, "0.0.0.0/0") + lfield(2, "10.88.0.1") + lfield(3, "eth0") + vfield(6, 1)
        + vfield(7, 4))
    request = agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=[route]))
    assert request.SerializeToString() == lfield(1, lfield(1, route.SerializeToString()))


def test_empty_is_the_well_known_empty() -> None:
    method = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods_by_name["CloseStdin"]
    assert method.output_type is empty_pb2.Empty.DESCRIPTOR
