"""virtiofsd as the sandbox monitor starts it is confined: the process that serves the guest
runs under virtiofsd's seccomp filter, in mount, pid and network namespaces of its own, with
the share as its root, so a host file outside the share cannot be named through it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from cocoon.hypervisor.hostcheck import VIRTIOFSD
from cocoon.sandbox.virtiofsd import Virtiofsd

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(not VIRTIOFSD.exists(), reason="virtiofsd not installed"),
]


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def server_of(pid: int, timeout: float = 10.0) -> int:
    """virtiofsd forks into its new pid namespace: the child is the one that serves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children and status(int(children[0])).get("Seccomp") == "2":
            return int(children[0])
        time.sleep(0.02)
    raise AssertionError(f"virtiofsd {pid} has no sandboxed child after {timeout} s")


def test_virtiofsd_serves_from_a_sandbox_that_sees_only_the_share(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "inside").write_text("shared")
    (tmp_path / "outside").write_text("host only")
    daemon = Virtiofsd(tmp_path / "fs.sock", share, tmp_path / "virtiofsd.log")

    async def scenario() -> None:
        await daemon.start()
        # virtiofsd enters its sandbox once its vhost-user peer (QEMU) has connected
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            peer.connect(str(tmp_path / "fs.sock"))
            assert daemon.pid is not None
            server = server_of(daemon.pid)
            assert status(server)["Seccomp"] == "2"  # its filter kills on a foreign call
            for kind in ("mnt", "pid", "net"):
                assert os.readlink(f"/proc/{server}/ns/{kind}") != \
                    os.readlink(f"/proc/self/ns/{kind}"), kind
            root = Path(f"/proc/{server}/root")
            assert sorted(os.listdir(root)) == ["inside"]
            assert (root / "inside").read_text() == "shared"
            for escape in ("../outside", str(tmp_path / "outside")[1:], "../../etc/passwd",
                           "etc/passwd"):
                assert not (root / escape).exists(), escape
        finally:
            peer.close()
            await daemon.stop()

    asyncio.run(scenario())
