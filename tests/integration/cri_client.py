"""A small CRI v1 client over gRPC, as the kubelet talks to containerd's CRI plugin.

The messages are the project's own CRI protos (`cocoon.protocols.gen.cri_pb2`); the calls are
grpc's generic unary calls by method path, so no generated grpc stubs are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from cocoon.protocols.gen import cri_pb2 as cri

M = TypeVar("M", bound=Message)
RUNTIME = "runtime.v1.RuntimeService"
IMAGE = "runtime.v1.ImageService"


class CRIClient:
    def __init__(self, socket: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")

    def close(self) -> None:
        self.channel.close()

    def call(self, service: str, method: str, request: Message, response_type: type[M],
             timeout: float = 240.0) -> M:
        stub: Any = self.channel.unary_unary(
            f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString)
        response: M = stub(request, timeout=timeout)
        return response

    def runtime(self, method: str, request: Message, response_type: type[M],
                timeout: float = 240.0) -> M:
        return self.call(RUNTIME, method, request, response_type, timeout)

    # --- the calls the tests use -------------------------------------------------------------

    def version(self) -> cri.VersionResponse:
        return self.runtime("Version", cri.VersionRequest(), cri.VersionResponse, 10.0)

    def run_pod(self, config: cri.PodSandboxConfig, handler: str) -> str:
        response = self.runtime("RunPodSandbox", cri.RunPodSandboxRequest(
            config=config, runtime_handler=handler), cri.RunPodSandboxResponse)
        return response.pod_sandbox_id

    def stop_pod(self, pod_id: str) -> None:
        self.runtime("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                     cri.StopPodSandboxResponse)

    def remove_pod(self, pod_id: str) -> None:
        self.runtime("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                     cri.RemovePodSandboxResponse)

    def create_container(self, pod_id: str, config: cri.ContainerConfig,
                         sandbox: cri.PodSandboxConfig) -> str:
        response = self.runtime("CreateContainer", cri.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox),
            cri.CreateContainerResponse)
        return response.container_id

    def start_container(self, container_id: str) -> None:
        self.runtime("StartContainer", cri.StartContainerRequest(container_id=container_id),
                     cri.StartContainerResponse)

    def container_status(self, container_id: str) -> cri.ContainerStatus:
        response = self.runtime("ContainerStatus", cri.ContainerStatusRequest(
            container_id=container_id), cri.ContainerStatusResponse)
        return response.status

    def port_forward(self, pod_id: str, ports: list[int]) -> str:
        """The streaming server's URL for a port forward (the kubelet dials it next)."""
        response = self.runtime("PortForward", cri.PortForwardRequest(
            pod_sandbox_id=pod_id, port=ports), cri.PortForwardResponse, 30.0)
        return response.url

    def exec_sync(self, container_id: str, cmd: list[str],
                  timeout: int = 60) -> cri.ExecSyncResponse:
        return self.runtime("ExecSync", cri.ExecSyncRequest(
            container_id=container_id, cmd=cmd, timeout=timeout), cri.ExecSyncResponse,
            timeout=timeout + 30.0)


def host_network_pod(name: str, uid: str, log_directory: Path,
                     network: cri.NamespaceMode = cri.NODE) -> cri.PodSandboxConfig:
    """A pod on the node's network (`network=cri.POD`: in a network namespace of its own,
    which needs a CNI network), sharing one pid namespace."""
    options = cri.NamespaceOption(network=network, pid=cri.POD, ipc=cri.POD)
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
        hostname=name, log_directory=str(log_directory),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=options)))


def container_config(name: str, image: str, command: list[str],
                     pod: cri.PodSandboxConfig) -> cri.ContainerConfig:
    options = pod.linux.security_context.namespace_options
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=0), image=cri.ImageSpec(image=image),
        command=command, log_path=f"{name}.log",
        linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
            namespace_options=options)))


def list_pod_stats(client: CRIClient, pod_id: str = "") -> list[cri.PodSandboxStats]:
    """ListPodSandboxStats (`crictl statsp`), for one pod or all."""
    response = client.runtime("ListPodSandboxStats", cri.ListPodSandboxStatsRequest(
        filter=cri.PodSandboxStatsFilter(id=pod_id)), cri.ListPodSandboxStatsResponse, 60.0)
    return list(response.stats)
