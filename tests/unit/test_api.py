"""The API's pieces that need no VM: what `cocoon` exports, the output streams, the spec a
sandbox's container gets, and the refusals made before any VM starts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import cocoon
from cocoon import api
from cocoon.api import spec as specs
from cocoon.api.streams import Stream
from cocoon.errors import ConfigError


def test_cocoon_exports_the_api_lazily() -> None:
    assert frozenset(api.__all__) == cocoon.API
    assert cocoon.Sandbox is api.Sandbox and cocoon.AsyncSandbox is api.AsyncSandbox
    with pytest.raises(AttributeError):
        cocoon.NoSuchThing  # noqa: B018
    # the CLI and the agent import `cocoon` without the API
    code = "import cocoon, cocoon.errors, sys; print('cocoon.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_a_stream_gives_back_lines_and_bytes_in_order() -> None:
    async def scenario() -> None:
        stream = Stream()
        for chunk in (b"on", b"e\ntw", b"o\nthree"):
            await stream.feed(chunk)
        reader = asyncio.create_task(stream.read())
        assert await stream.readline() == b"one\n"
        await stream.feed_eof()
        rest = await reader
        assert rest == b"two\nthree"
        assert await stream.read() == b"" and await stream.readline() == b""

    asyncio.run(scenario())


def test_a_stream_holds_a_bounded_number_of_chunks() -> None:
    async def scenario() -> None:
        stream = Stream()
        feeder = asyncio.create_task(_feed(stream, 100))
        await asyncio.sleep(0.05)
        assert not feeder.done()  # the pump waits for the reader
        assert len(await stream.read()) == 100
        await feeder

    async def _feed(stream: Stream, count: int) -> None:
        for _ in range(count):
            await stream.feed(b"x")
        await stream.feed_eof()

    asyncio.run(scenario())


def test_the_container_spec_carries_limits_mounts_and_the_busybox(tmp_path: Path) -> None:
    spec = specs.container_spec(rootfs=tmp_path, busybox=Path("/bin/true"), env=("A=1",),
                                cwd="/", memory_mib=48,
                                mounts=[specs.Mount(tmp_path, "/data", readonly=False)],
                                network=True, hostname="h")
    assert spec.linux is not None and spec.linux.resources is not None
    assert spec.linux.resources.memory is not None
    assert spec.linux.resources.memory.limit == 48 << 20
    assert spec.linux.namespace("network") is None  # network=True: the VM's own network
    destinations = {m.destination: m for m in spec.mounts}
    assert "ro" in destinations[specs.BUSYBOX].options
    assert "rw" in destinations["/data"].options
    assert spec.process is not None and spec.process.args == specs.HOLD
    process = specs.process(spec, ["echo", 1], env=("B=2",), cwd="/tmp")  # type: ignore[list-item]
    assert (process.args, process.env, process.cwd) == (("echo", "1"), ("B=2",), "/tmp")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"memory_mib": 2}, "memory_mib: 2 MiB is too little"),
    ({"mounts": [specs.Mount("/nonexistent-cocoon", "/x")]}, "/nonexistent-cocoon does not"),
    ({"mounts": [specs.Mount("/tmp", "relative")]}, "'relative' of /tmp is not an absolute"),
])
def test_bad_settings_are_refused_by_name(tmp_path: Path, kwargs: dict[str, object],
                                          message: str) -> None:
    settings: dict[str, object] = {"rootfs": tmp_path, "busybox": Path("/bin/true"), "env": (),
                                   "cwd": "/", "memory_mib": None, "mounts": (),
                                   "network": False, "hostname": "h"}
    settings.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        specs.container_spec(**settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a variable name"):
        specs.merge_env((), {"A=B": "x"})
    spec = specs.container_spec(rootfs=tmp_path, busybox=Path("/bin/true"), env=(), cwd="/",
                                memory_mib=None, mounts=(), network=False, hostname="h")
    with pytest.raises(ConfigError, match="non-empty list"):
        specs.process(spec, "echo hi")
