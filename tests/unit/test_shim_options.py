"""The containerd shim takes a RuntimeClass's configuration file from its runtime options
(`runtimeoptions.v1.Options` ConfigPath, written to `start`'s stdin as containerd does): the
decoding, and a real `start` whose daemon follows that file (its socket directory), a `delete`
that finds it again, and a broken file refused in one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from cocoon.errors import ConfigError
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.protocols.gen import runtimeoptions_pb2
from cocoon.shim import address as addr
from cocoon.shim import options
from tests.unit.test_shim_main import CONTAINERD, _bundle, _call, _pid_on, _wait_gone, place

__all__ = ["place"]  # the fixture, shared with test_shim_main


def _options(config_path: str = "", body: bytes = b"",
             type_url: str = "runtimeoptions.v1.Options") -> bytes:
    message = runtimeoptions_pb2.Options(config_path=config_path, config_body=body)
    return any_pb2.Any(type_url=type_url, value=message.SerializeToString()).SerializeToString()


def test_the_config_path_is_read_from_the_options() -> None:
    assert options.config_path(_options("/etc/cocoon/big.toml")) == Path("/etc/cocoon/big.toml")
    # containerd 1.6's ctr writes the bare name, CRI a type.googleapis.com URL
    assert options.config_path(_options(
        "/x.toml", type_url="type.googleapis.com/runtimeoptions.v1.Options")) == Path("/x.toml")
    assert options.config_path(b"") is None
    assert options.config_path(_options()) is None
    assert options.config_path(_options("/x.toml", type_url="containerd.runc.v1.Options")) \
        is None


def test_options_it_cannot_use_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ConfigPath 'cocoon\.toml' must be an absolute path"):
        options.config_path(_options("cocoon.toml"))
    with pytest.raises(ConfigError, match="ConfigBody is not supported"):
        options.config_path(_options(body=b"[hypervisor]\nvcpus = 2\n"))
    with pytest.raises(ConfigError, match="not a protobuf Any"):
        options.config_path(b"\xff\xff\xff")


def _start(place: Path, bundle: Path, cid: str, stdin: bytes,
           action: str = "start") -> subprocess.CompletedProcess[bytes]:
    """The shim as containerd runs it: options on a pipe, no COCOON_* of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCOON_")}
    argv = [sys.executable, "-m", "cocoon.shim.main", "-namespace", "k8s.io", "-address",
            CONTAINERD, "-publish-binary", "/usr/bin/containerd", "-id", cid, action]
    return subprocess.run(argv, cwd=bundle, env={**env, "TTRPC_ADDRESS": ""}, input=stdin,
                          capture_output=True, timeout=60, check=False)


def test_start_runs_the_pods_daemon_with_the_runtime_classs_file(place: Path) -> None:
    sockets = place / "class-s"
    config = place / "class.toml"
    config.write_text(f'[runtime]\nshim_socket_dir = "{sockets}"\nvm_dir = "{place / "vm"}"\n')
    bundle = _bundle(place, "b", {})
    log = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    try:
        started = _start(place, bundle, "c1", _options(str(config)))
        assert started.returncode == 0, started.stderr
        path = Path(addr.strip_unix(started.stdout.decode()))
        assert path.parent == sockets  # the file's socket directory, not the default one
        pid = _pid_on(path)
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert f"COCOON_CONFIG={config}".encode() in f.read().split(b"\0")
        assert (bundle / options.BUNDLE_FILE).read_text() == str(config)
        asyncio.run(_call(started.stdout.decode(), "Shutdown", api.ShutdownRequest(id="c1"),
                          api.ShutdownRequest))
        _wait_gone(pid)
        # delete (no options on its stdin) finds the same directories through the bundle
        deleted = _start(place, bundle, "c1", b"", action="delete")
        assert deleted.returncode == 0, deleted.stderr
        assert not list(sockets.iterdir())
    finally:
        os.close(log)


def test_a_broken_file_fails_start_in_one_line(place: Path) -> None:
    config = place / "bad.toml"
    config.write_text("[hypervisor]\nvcpus = 2\nmachine = \"virt\"\n")
    bundle = _bundle(place, "b", {})
    started = _start(place, bundle, "c1", _options(str(config)))
    assert started.returncode == 1
    assert started.stderr.decode() == (
        f"containerd-shim-cocoon-v2: {config}:3: hypervisor.machine: must be one of pc, q35, "
        "microvm, not 'virt'\n")
    assert not (bundle / options.BUNDLE_FILE).exists()
    missing = place / "missing.toml"
    started = _start(place, bundle, "c1", _options(str(missing)))
    assert started.returncode == 1
    assert str(missing) in started.stderr.decode()
