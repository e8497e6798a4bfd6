"""Variant guest images for tests: the real image with a different /init.

`misbehaving_image()` is the agent's image whose /init runs the real agent with one addition: a
`grpc.Health/Version` call whose `service` is `GARBAGE_REQUEST` makes the guest write
`GARBAGE` straight onto the `cocoon.agent` virtio-serial port, bypassing ttrpc. With the kernel
argument `COCOON_TEST_GARBAGE=always` (kernel arguments reach /init as environment variables)
the guest runs no agent at all: it loads the virtio modules like the agent does, finds the
port by name under /sys/class/virtio-ports, and answers every host connection with garbage.

These are guests the host must survive: nothing the guest sends is trusted.
"""

from __future__ import annotations

from pathlib import Path

from cocoon.guest import assets
from cocoon.guest.image import PYTHON, SYS_PATH

GARBAGE_REQUEST = "cocoon-test-garbage"
# 8 bytes repeated: read as a ttrpc header, "GARB" announces a 1.2 GB frame (over the 4 MiB cap)
GARBAGE = b"GARBAGE!" * 512
ALWAYS = "COCOON_TEST_GARBAGE=always"

MISBEHAVING_INIT = f'''#!{PYTHON} -ISB
"""Test guest: the real agent, plus garbage on the agent port when asked."""
import asyncio
import os
import sys

sys.path[0:0] = {list(SYS_PATH)!r}
os.environ.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
GARBAGE = {GARBAGE!r}

from cocoon.agent import channel


async def spew(device):
    """Answer every host connection with garbage, then wait for the host to hang up."""
    port = channel.Port(device)
    while True:
        session = await port.next_session()
        print("cocoon-test: host connected, sending garbage", flush=True)
        session.writer.write(GARBAGE)
        try:
            await session.writer.drain()
            while await session.reader.read(65536):
                pass
        except OSError:
            pass
        session.end()


def garbage_always():
    from cocoon.agent import pid1
    pid1.mount_basics()
    pid1.load_modules()
    asyncio.run(spew(channel.find_port()))


def agent_with_garbage_on_request():
    from cocoon.agent import main, service
    writers = []
    real_next_session = channel.Port.next_session

    async def next_session(self):
        session = await real_next_session(self)
        writers.append(session.writer)
        return session

    channel.Port.next_session = next_session
    real_version = service.HealthService.Version

    async def version(self, request, ctx):
        if request.service != {GARBAGE_REQUEST!r}:
            return await real_version(self, request, ctx)
        print("cocoon-test: garbage requested", flush=True)
        writers[-1].write(GARBAGE)
        await asyncio.sleep(3600)

    service.HealthService.Version = version
    main.main()


try:
    if os.environ.get("COCOON_TEST_GARBAGE") == "always":
        garbage_always()
    else:
        agent_with_garbage_on_request()
except BaseException:
    import traceback
    traceback.print_exc()
print("cocoon-test: init exited; powering off", flush=True)
os.execv("/bin/busybox", ["poweroff", "-f"])
'''


def misbehaving_image() -> Path:
    """The misbehaving variant's initrd (built on first use, cached by digest like the real one)."""
    return assets.ensure_guest_image(init=MISBEHAVING_INIT.encode()).initrd
