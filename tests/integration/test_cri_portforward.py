"""Kubernetes port forwarding through containerd's CRI (`kubectl port-forward`).

The kubelet asks CRI PortForward for a URL on containerd's streaming server and connects to it
(here with a WebSocket, protocol `v4.channel.k8s.io`: every message starts with its channel
byte, a data and an error channel per port, each opened by the server with the port as two
little-endian bytes). containerd then dials `localhost:PORT` inside the pod's network namespace
on the host (for a hostNetwork pod, in the host's own), where Cocoon's port mirror carries the
connection to the guest's loopback. The pods here run `busybox httpd`, and an HTTP GET through
the forward must bring back the file it serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import websocket

from cocoon.protocols.gen import cri_pb2 as cri
from tests.integration.containerd_env import (
    BUSYBOX,
    HANDLER,
    PAUSE,
    PAUSE_CMD,
    Containerd,
    write_image,
)
from tests.integration.cri_client import CRIClient, container_config, host_network_pod

pytestmark = [pytest.mark.integration, pytest.mark.vm,
              pytest.mark.skipif(shutil.which("containerd") is None,
                                 reason="containerd is not installed"),
              pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"),
                                 reason="the CNI plugins are not installed")]

DATA, ERROR = 0, 1
PAGE = "forwarded from the pod\n"


@pytest.fixture
def leak_check() -> None:
    """This containerd's shims keep their VMs in its own directories, checked by `ctrd`."""


@pytest.fixture
def ctrd() -> Iterator[Containerd]:
    bridge = f"ccpf{os.getpid() % 100000}"
    c = Containerd()
    try:
        c.write_bridge_network(bridge, "10.199.0.0/24")
        c.start()
        c.import_image(write_image(c.base / "busybox.tar", BUSYBOX), namespace="k8s.io")
        c.import_image(write_image(c.base / "pause.tar", PAUSE, PAUSE_CMD), namespace="k8s.io")
        yield c
    finally:
        report = c.close()
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
    assert not report, f"left behind: {report}"


def port_forward_get(url: str, port: int, timeout: float = 30.0) -> tuple[bytes, bytes]:
    """GET / through a port forward; (what came back on the data channel, on the error one)."""
    ws = websocket.create_connection(url.replace("http", "ws", 1) + f"?port={port}",
                                     subprotocols=["v4.channel.k8s.io"], timeout=timeout)
    received = {DATA: b"", ERROR: b""}
    opened = {DATA: False, ERROR: False}
    try:
        sent = False
        while True:
            try:
                opcode, frame = ws.recv_data()
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if not frame:
                continue
            channel, payload = frame[0], frame[1:]
            if channel not in received:
                continue
            if not opened[channel]:  # each channel starts with its port
                assert payload[:2] == port.to_bytes(2, "little"), frame
                opened[channel], payload = True, payload[2:]
            received[channel] += payload
            if opened[DATA] and opened[ERROR] and not sent:
                ws.send_binary(bytes([DATA]) + b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
                sent = True
            if PAGE.encode() in received[DATA] or received[ERROR]:
                break
    finally:
        with contextlib.suppress(Exception):
            ws.close()
    return received[DATA], received[ERROR]


def forwarded_page(client: CRIClient, pod_id: str, port: int, timeout: float = 60.0) -> bytes:
    """The page through a port forward, asked again while the port is not mirrored yet."""
    deadline = time.monotonic() + timeout
    while True:
        data, error = port_forward_get(client.port_forward(pod_id, [port]), port)
        if PAGE.encode() in data or time.monotonic() > deadline:
            assert PAGE.encode() in data, (data, error)
            return data
        time.sleep(0.5)


def serve_page(port: int) -> list[str]:
    return ["sh", "-c", f"mkdir -p /www && echo '{PAGE.strip()}' > /www/index.html && "
            f"exec httpd -f -p {port} -h /www"]


def run_web_pod(client: CRIClient, ctrd: Containerd, name: str, network: cri.NamespaceMode,
                port: int) -> tuple[str, str]:
    logs = ctrd.base / f"{name}-logs"
    logs.mkdir()
    pod = host_network_pod(name, f"uid-{name}", logs, network=network)
    pod_id = client.run_pod(pod, HANDLER)
    web = client.create_container(pod_id, container_config("web", BUSYBOX, serve_page(port),
                                                           pod), pod)
    client.start_container(web)
    deadline = time.monotonic() + 60
    while True:  # httpd answers in the guest first
        result = client.exec_sync(web, ["wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/"])
        if result.exit_code == 0 or time.monotonic() > deadline:
            assert result.stdout.decode() == PAGE, result
            return pod_id, web
        time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_port_forward_reaches_an_http_server_in_a_pod_of_its_own_network(
        ctrd: Containerd) -> None:
    client = CRIClient(ctrd.socket)
    try:
        pod_id, _ = run_web_pod(client, ctrd, "pf", cri.POD, 8080)
        status = client.runtime("PodSandboxStatus", cri.PodSandboxStatusRequest(
            pod_sandbox_id=pod_id), cri.PodSandboxStatusResponse).status
        assert status.network.ip.startswith("10.199.0."), status.network
        data = forwarded_page(client, pod_id, 8080)
        assert data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n")[0], data
        # a port nothing listens on reports an error on the error channel, not a hang
        data, error = port_forward_get(client.port_forward(pod_id, [8081]), 8081)
        assert error and not data, (data, error)
        client.stop_pod(pod_id)
        client.remove_pod(pod_id)
    finally:
        client.close()


def test_port_forward_reaches_an_http_server_in_a_host_network_pod(ctrd: Containerd) -> None:
    client = CRIClient(ctrd.socket)
    port = free_port()
    try:
        pod_id, _ = run_web_pod(client, ctrd, "pfhost", cri.NODE, port)
        forwarded_page(client, pod_id, port)
        client.stop_pod(pod_id)
        client.remove_pod(pod_id)
    finally:
        client.close()
