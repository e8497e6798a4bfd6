#!/usr/bin/env python3
"""ttrpc throughput over a unix socket: unary round trips per second and streaming MB/s.

The server (the cocoon.testing.Echo service) runs in a child process by default, so client and
server each get a core as the host and the agent would; `--same-process` runs both on one event
loop. Run: .venv/bin/python bench/ttrpc.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cocoon.protocols.gen import testing_pb2 as pb
from cocoon.ttrpc import Client, Server
from cocoon.ttrpc.echo import SERVICE, EchoService

ECHO = "cocoon.testing.Echo"
CHUNK = 64 * 1024
MB = 1_000_000


async def serve(path: str) -> None:
    server = Server()
    server.register_service(SERVICE, EchoService())
    await server.start_unix(path)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()


async def timed(seconds: float, step: Callable[[], Awaitable[int]]) -> tuple[int, int, float]:
    """Repeat `step` (which returns the bytes it moved) for about `seconds`."""
    count = moved = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        moved += await step()
        count += 1
    return count, moved, time.perf_counter() - start


async def unary(client: Client, seconds: float, in_flight: int, size: int) -> tuple[int, float]:
    request = pb.EchoRequest(payload=b"x" * size)

    async def worker() -> tuple[int, int, float]:
        async def once() -> int:
            await client.call(ECHO, "Echo", request, pb.EchoResponse)
            return 0
        return await timed(seconds, once)

    results = await asyncio.gather(*(worker() for _ in range(in_flight)))
    return sum(r[0] for r in results), max(r[2] for r in results)


async def upload(client: Client, seconds: float) -> tuple[int, float]:
    stream = await client.open_stream(ECHO, "Discard", pb.DiscardResponse,
                                      client_streaming=True, server_streaming=False)
    message = pb.EchoRequest(payload=b"u" * CHUNK)

    async def once() -> int:
        await stream.send(message)
        return CHUNK

    start = time.perf_counter()
    _, moved, _ = await timed(seconds, once)
    await stream.close_send()
    total = await stream.recv()
    assert total is not None and total.bytes == moved
    return moved, time.perf_counter() - start


async def download(client: Client, seconds: float) -> tuple[int, float]:
    batch = 256

    async def once() -> int:
        stream = await client.open_stream(
            ECHO, "Repeat", pb.EchoResponse, request=pb.RepeatRequest(payload=b"d" * CHUNK,
                                                                       count=batch),
            client_streaming=False, server_streaming=True)
        moved = 0
        async for message in stream:
            moved += len(message.payload)
        return moved

    _, moved, elapsed = await timed(seconds, once)
    return moved, elapsed


async def bidi(client: Client, seconds: float) -> tuple[int, float]:
    stream = await client.open_stream(ECHO, "EchoStream", pb.EchoResponse,
                                      client_streaming=True, server_streaming=True)
    message = pb.EchoRequest(payload=b"b" * CHUNK)

    async def sender() -> int:
        sent = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await stream.send(message)
            sent += 1
        await stream.close_send()
        return sent

    start = time.perf_counter()
    send_task = asyncio.create_task(sender())
    received = 0
    async for reply in stream:
        received += len(reply.payload)
    await send_task
    return received, time.perf_counter() - start


async def measure(path: str, seconds: float) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    async with await Client.connect_unix(path, timeout=10) as client:
        await client.call(ECHO, "Echo", pb.EchoRequest(), pb.EchoResponse)  # warm up
        for in_flight in (1, 32):
            calls, elapsed = await unary(client, seconds, in_flight, 16)
            rows.append((f"unary Echo, 16 B, {in_flight} in flight",
                         f"{calls / elapsed:,.0f} calls/s",
                         f"{elapsed / calls * in_flight * 1e6:,.0f} us/call"))
        calls, elapsed = await unary(client, seconds, 1, CHUNK)
        rows.append(("unary Echo, 64 KiB each way, 1 in flight",
                     f"{calls / elapsed:,.0f} calls/s",
                     f"{2 * calls * CHUNK / elapsed / MB:,.0f} MB/s, both ways"))
        for label, run in (("client -> server stream (Discard)", upload),
                           ("server -> client stream (Repeat)", download),
                           ("both ways (EchoStream), per direction", bidi)):
            moved, elapsed = await run(client, seconds)
            rows.append((f"{label}, 64 KiB messages", f"{moved / elapsed / MB:,.1f} MB/s",
                         f"{moved / MB:,.0f} MB in {elapsed:.1f} s"))
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--same-process", action="store_true",
                        help="serve from this process's event loop")
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve)
        return 0

    with tempfile.TemporaryDirectory(prefix="ttrpc-bench-") as tmp:
        path = str(Path(tmp) / "echo.sock")
        child: asyncio.subprocess.Process | None = None
        server: Server | None = None
        try:
            if args.same_process:
                server = Server()
                server.register_service(SERVICE, EchoService())
                await server.start_unix(path)
            else:
                child = await asyncio.create_subprocess_exec(
                    sys.executable, os.path.abspath(__file__), "--serve", path)
                for _ in range(200):
                    if os.path.exists(path):
                        break
                    await asyncio.sleep(0.05)
            rows = await measure(path, args.seconds)
        finally:
            if server is not None:
                await server.close()
            if child is not None:
                child.terminate()
                await child.wait()

    where = "same process" if args.same_process else "server in a child process"
    print(f"ttrpc over a unix socket ({where}, {args.seconds:g} s per line, "
          f"Python {sys.version.split()[0]})")
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'rate':>16}  detail")
    for name, rate, detail in rows:
        print(f"{name:<{width}}  {rate:>16}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
