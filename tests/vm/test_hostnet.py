"""The host network (`--network host`: a bundle with no network namespace) through real VMs.

The guest reaches out through QEMU's user-mode network (the host's loopback is the gateway,
10.0.2.2), and a server in the container is reached on the host's 127.0.0.1 at its own port
(the port mirror). Nothing is made on the host's interfaces.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.framework.cli import Cli

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(os.geteuid() != 0, reason="the CLI's VMs need root")]


@pytest.fixture
def cli(state_root: Path) -> Cli:
    return Cli(state_root)


@pytest.fixture
def container(cli: Cli) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for cid in ids:
        cli("delete", "--force", cid)


def host_network_bundle(path: Path, args: list[str]) -> Path:
    from cocoon.guest import assets
    from cocoon.oci.default import default_spec

    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(assets.ensure_busybox_rootfs(), path / "rootfs", symlinks=True)
    spec: dict[str, Any] = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                   if ns["type"] != "network"]
    (path / "config.json").write_text(json.dumps(spec))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def interfaces() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


def get(url: str, timeout: float = 60.0) -> bytes:
    """GET `url`, retrying while nothing listens yet (the mirror follows the guest)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: bytes = response.read()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_host_network_goes_out_through_user_mode_and_mirrors_ports_on_loopback(
        cli: Cli, tmp_path: Path, container: list[str]) -> None:
    before = interfaces()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host_port = server.server_address[1]
    mirrored = free_port()
    try:
        www = tmp_path / "hn" / "rootfs" / "www"
        container.append("hn")
        bundle = host_network_bundle(tmp_path / "hn", [
            "httpd", "-f", "-p", f"127.0.0.1:{mirrored}", "-h", "/www"])
        www.mkdir(parents=True)
        (www / "index.html").write_text("served from the guest\n")
        cli.ok("run", "--detach", "--bundle", str(bundle), "hn")

        # out: the host's loopback is slirp's gateway
        fetched = cli.ok("exec", "hn", "wget", "-q", "-O", "-",
                         f"http://10.0.2.2:{host_port}/")
        assert fetched == "hello from the host\n"
        routes = cli.ok("exec", "hn", "ip", "route")
        assert "default via 10.0.2.2 dev eth0" in routes, routes

        # in: the container's port on the host's 127.0.0.1, bound to its loopback in the guest
        assert get(f"http://127.0.0.1:{mirrored}/") == b"served from the guest\n"
        # the host got no interface of the VM's
        assert interfaces() == before

        cli.ok("delete", "--force", "hn")
        container.remove("hn")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", mirrored), timeout=5).close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_taken_on_the_host_is_left_to_the_host(
        cli: Cli, tmp_path: Path, container: list[str]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        container.append("hn2")
        bundle = host_network_bundle(tmp_path / "hn2", ["nc", "-l", "-p", str(port)])
        cli.ok("run", "--detach", "--bundle", str(bundle), "hn2")
        # the container's listener runs; the host's keeps the port
        deadline = time.monotonic() + 60
        while str(port) not in cli.ok("exec", "hn2", "netstat", "-ltn"):
            assert time.monotonic() < deadline, "nc did not listen in the guest"
            time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = taken.accept()
            conn.close()
        assert cli.ok("state", "hn2") and json.loads(cli.ok("state", "hn2"))["status"] == \
            "running"
    finally:
        taken.close()
