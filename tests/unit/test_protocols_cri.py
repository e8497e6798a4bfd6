"""cri.proto: the CRI v1 RuntimeService and ImageService shapes containerd's CRI plugin serves."""

from __future__ import annotations

from cocoon.protocols.gen import cri_pb2
from tests.unit.test_protocols_agent import lfield, methods, vfield

R = "runtime.v1."


def test_runtime_service() -> None:
    service = cri_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    assert service.full_name == "runtime.v1.RuntimeService"
    calls = ["Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox",
             "PodSandboxStatus", "ListPodSandbox", "CreateContainer", "StartContainer",
             "StopContainer", "RemoveContainer", "ListContainers", "ContainerStatus", "ExecSync",
             "PortForward", "PodSandboxStats", "ListPodSandboxStats"]
    assert methods(cri_pb2, "RuntimeService") == {
        name: (f"{R}{name}Request", f"{R}{name}Response") for name in calls}


def test_pod_sandbox_stats_golden() -> None:
    """The field numbers of cri-api's PodSandboxStats, as containerd fills them."""
    stats = cri_pb2.PodSandboxStats(
        attributes=cri_pb2.PodSandboxAttributes(id="p1"),
        linux=cri_pb2.LinuxPodSandboxStats(
            cpu=cri_pb2.CpuUsage(timestamp=1, usage_core_nano_seconds=cri_pb2.UInt64Value(
                value=2)),
            memory=cri_pb2.MemoryUsage(working_set_bytes=cri_pb2.UInt64Value(value=3)),
            process=cri_pb2.ProcessUsage(process_count=cri_pb2.UInt64Value(value=4))))
    assert stats.SerializeToString() == lfield(1, lfield(1, "p1")) + lfield(2, (
        lfield(1, vfield(1, 1) + lfield(2, vfield(1, 2))) + lfield(2, lfield(2, vfield(1, 3)))
        + lfield(4, lfield(2, vfield(1, 4)))))
    request = cri_pb2.ListPodSandboxStatsRequest(filter=cri_pb2.PodSandboxStatsFilter(id="p1"))
    assert request.SerializeToString() == lfield(1, lfield(1, "p1"))


def test_image_service() -> None:
    assert cri_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name == \
        "runtime.v1.ImageService"
    assert methods(cri_pb2, "ImageService") == {
        name: (f"{R}{name}Request", f"{R}{name}Response")
        for name in ("ListImages", "ImageStatus", "PullImage")}


def test_run_pod_sandbox_request_golden() -> None:
    config = cri_pb2.PodSandboxConfig(
        metadata=cri_pb2.PodSandboxMetadata(name="pod", uid="u1", namespace="default", attempt=1),
        hostname="pod", log_directory="/var/log/pods/p",
        labels={"app": "x"},
        linux=cri_pb2.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods",
            security_context=cri_pb2.LinuxSandboxSecurityContext(
                namespace_options=cri_pb2.NamespaceOption(pid=cri_pb2.CONTAINER))))
    request = cri_pb2.RunPodSandboxRequest(config=config, runtime_handler="cocoon")
    assert request.SerializeToString() == lfield(1, (
        lfield(1, lfield(1, "pod") + lfield(2, "u1") + lfield(3, "default") + vfield(4, 1))
        + lfield(2, "pod") + lfield(3, "/var/log/pods/p")
        + lfield(6, lfield(1, "app") + lfield(2, "x"))
        + lfield(8, lfield(1, "/kubepods") + lfield(2, lfield(1, vfield(2, 1))))
    )) + lfield(2, "cocoon")


def test_create_container_request_golden() -> None:
    config = cri_pb2.ContainerConfig(
        metadata=cri_pb2.ContainerMetadata(name="box"),
        image=cri_pb2.ImageSpec(image="localhost/cocoon-busybox:1", user_specified_image="bb"),
        command=["sh", "-c"], args=["cat /proc/sys/kernel/random/boot_id"],
        envs=[cri_pb2.KeyValue(key="A", value="1")],
        mounts=[cri_pb2.Mount(container_path="/data", host_path="/srv", readonly=True)],
        log_path="box/0.log", tty=True,
        linux=cri_pb2.LinuxContainerConfig(
            resources=cri_pb2.LinuxContainerResources(memory_limit_in_bytes=1 << 27)))
    request = cri_pb2.CreateContainerRequest(pod_sandbox_id="p1", config=config)
    assert request.SerializeToString() == lfield(1, "p1") + lfield(2, (
        lfield(1, lfield(1, "box"))
        + lfield(2, lfield(1, "localhost/cocoon-busybox:1") + lfield(18, "bb"))
        + lfield(3, "sh") + lfield(3, "-c") + lfield(4, "cat /proc/sys/kernel/random/boot_id")
        + lfield(6, lfield(1, "A") + lfield(2, "1"))
        + lfield(7, lfield(1, "/data") + lfield(2, "/srv") + vfield(3, 1))
        + lfield(11, "box/0.log") + vfield(14, 1)
        + lfield(15, lfield(1, vfield(4, 1 << 27)))))


def test_status_and_exec_messages_golden() -> None:
    status = cri_pb2.ContainerStatus(
        id="c1", state=cri_pb2.CONTAINER_EXITED, created_at=1, started_at=2, finished_at=3,
        exit_code=7, reason="Error", image_id="sha256:ab")
    assert status.SerializeToString() == (
        lfield(1, "c1") + vfield(3, 2) + vfield(4, 1) + vfield(5, 2) + vfield(6, 3)
        + vfield(7, 7) + lfield(10, "Error") + lfield(17, "sha256:ab"))
    assert cri_pb2.ExecSyncRequest(container_id="c1", cmd=["true"], timeout=5) \
        .SerializeToString() == lfield(1, "c1") + lfield(2, "true") + vfield(3, 5)
    assert cri_pb2.ExecSyncResponse(stdout=b"hi\n", exit_code=3).SerializeToString() == \
        lfield(1, b"hi\n") + vfield(3, 3)
    assert cri_pb2.StopContainerRequest(container_id="c1", timeout=10).SerializeToString() == \
        lfield(1, "c1") + vfield(2, 10)
    assert cri_pb2.PodSandboxStatusResponse(
        status=cri_pb2.PodSandboxStatus(id="p1", state=cri_pb2.SANDBOX_NOTREADY,
                                        runtime_handler="cocoon")).SerializeToString() == \
        lfield(1, lfield(1, "p1") + vfield(3, 1) + lfield(9, "cocoon"))


def test_image_messages_golden() -> None:
    assert cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image="docker.io/library/busybox")) \
        .SerializeToString() == lfield(1, lfield(1, "docker.io/library/busybox"))
    image = cri_pb2.Image(id="sha256:ab", repo_tags=["localhost/bb:1"], size=1024,
                          uid=cri_pb2.Int64Value(value=0), pinned=True)
    assert image.SerializeToString() == (
        lfield(1, "sha256:ab") + lfield(2, "localhost/bb:1") + vfield(4, 1024)
        + lfield(5, b"") + vfield(8, 1))
    assert cri_pb2.ListContainersRequest(filter=cri_pb2.ContainerFilter(pod_sandbox_id="p1")) \
        .SerializeToString() == lfield(1, lfield(3, "p1"))


def test_port_forward_golden() -> None:
    """cri-api's PortForwardRequest{pod_sandbox_id 1, port 2 (repeated int32, packed)}."""
    request = cri_pb2.PortForwardRequest(pod_sandbox_id="p1", port=[8080])
    assert request.SerializeToString() == b"\n\x02p1\x12\x02\x90\x3f"
    assert cri_pb2.PortForwardResponse(url="u").SerializeToString() == b"\n\x01u"
