"""podman 4.3 with its default bridge network (netavark here) and Cocoon as the runtime.

netavark puts a veth with an address in the container's namespace and passes the namespace's
path in config.json; Cocoon carries it into the VM. A published port (`-p HOSTPORT:80`, an
iptables DNAT on the host) reaches busybox httpd in the guest, and two containers on the same
network reach each other by IP. `--network none` gives a guest with loopback only.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.network import audit
from cocoon.sandbox.share import detach_all
from tests.integration.test_podman import IMAGE, ULIMITS, Podman

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")]

CONTENT = f"served from a Cocoon guest {secrets.token_hex(8)}\n"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    from cocoon.guest import assets

    base = tmp_path_factory.mktemp("podman-net")
    (base / "tmp").mkdir()
    p = Podman(base, str(Path(sys.executable).parent / "cocoon"))
    p("load", "-i", str(assets.write_busybox_oci_archive(base / "busybox.tar")), check=True)
    yield p
    p("rm", "--all", "--force", "--time", "0", timeout=300)
    detach_all(base)  # podman keeps its overlay store mounted


@pytest.fixture
def www(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text(CONTENT)
    return tmp_path / "www"


@contextlib.contextmanager
def web_server(podman: Podman, www: Path, name: str, *publish: str) -> Iterator[str]:
    """busybox httpd serving `www` in a detached container; yields its IP on the network."""
    run = podman("run", "-d", "--name", name, *publish, *ULIMITS, "-v", f"{www}:/www:ro", IMAGE,
                 "httpd", "-f", "-p", "80", "-h", "/www")
    assert run.returncode == 0, run.stderr
    try:
        address = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name,
                         check=True).stdout.strip()
        assert address, "podman gave the container no address"
        yield address
    finally:
        podman("rm", "--force", "--time", "0", name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_published_port_serves_a_file_to_the_host(podman: Podman, www: Path) -> None:
    port = free_port()
    with web_server(podman, www, "cocoon-web", "-p", f"{port}:80") as address:
        assert fetch(f"http://127.0.0.1:{port}/index.html") == CONTENT
        assert fetch(f"http://{address}/index.html") == CONTENT  # over the bridge, too
        sandbox = podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", "cocoon-web",
                         check=True).stdout.strip()
        assert audit.orphans(sandbox) == []  # redirects and tap in place, as one pair
    assert not Path(sandbox).exists() or audit.orphans(sandbox) == []


def test_two_containers_reach_each_other_by_ip(podman: Podman, www: Path) -> None:
    with web_server(podman, www, "cocoon-peer") as address:
        client = podman("run", "--rm", "--cap-add", "NET_RAW", *ULIMITS, IMAGE, "sh", "-c",
                        f"ping -c 2 -W 10 {address} && wget -q -O - http://{address}/index.html"
                        " && cat /etc/hosts")
        assert client.returncode == 0, client.stdout + client.stderr
        assert "2 packets received" in client.stdout
        assert CONTENT in client.stdout
        assert "host.containers.internal" in client.stdout  # podman's /etc/hosts arrived


def test_network_none_gives_loopback_only(podman: Podman) -> None:
    result = podman("run", "--rm", "--network", "none", *ULIMITS, IMAGE, "ip", "-o", "link")
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[1].strip() for line in result.stdout.splitlines()] == ["lo"]


def test_network_host_goes_out_through_the_vm_and_its_ports_reach_the_host_loopback(
        podman: Podman, www: Path) -> None:
    """`--network host`: no namespace; the guest's user-mode network reaches the host's
    loopback at 10.0.2.2, and httpd's port is mirrored on the host's 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"hostnet-{secrets.token_hex(3)}"
    run = podman("run", "-d", "--name", name, "--network", "host", *ULIMITS, "-v",
                 f"{www}:/www:ro", IMAGE, "httpd", "-f", "-p", str(port), "-h", "/www")
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html",
                                            timeout=10) as response:
                    assert response.read().decode() == CONTENT
                break
            except OSError:
                assert time.monotonic() < deadline, "the container's port never reached the host"
                time.sleep(0.3)
        # and back: from a second host-network container, through the host's loopback
        client = podman("run", "--rm", "--network", "host", *ULIMITS, IMAGE, "wget", "-q",
                        "-O", "-", f"http://10.0.2.2:{port}/index.html")
        assert client.returncode == 0, client.stdout + client.stderr
        assert client.stdout == CONTENT
    finally:
        podman("rm", "--force", "--time", "0", name)
