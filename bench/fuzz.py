#!/usr/bin/env python3
"""Fuzz every host-side reader of guest data with generated and mutated ttrpc frames.

The seeds are valid frames of the shapes the agent really sends (responses carrying each typed
reply, error statuses, data frames, closing frames); each round opens streams the way the host
does and feeds a burst of mutated seeds, in random chunks, to one of the targets:

- client:     the sans-IO `ClientConnection` (frame decoder and stream state), then every event's
              status and payload decoded as the host would;
- server:     the sans-IO `ServerConnection` (what the containerd shim reads);
- proxy:      the monitor's `AgentProxy` (agent side), with the bytes it forwards fed to a
              `ClientConnection` standing for the local client behind it;
- validators: each typed method of `AgentClient` answered with the mutated reply payloads;
- relay:      `ProcessRelay.run()` against a guest whose output, stdin counts and exit status are
              decoded from mutated frames (fewer rounds: each is a small event-loop run);
- task:       the containerd shim's `TaskService` behind its ttrpc server, sent mutated requests
              of every method (`fuzztask.py`: what containerd, or whoever reaches the shim's
              socket, may send it).

Mutations: lying lengths (short, long, beyond 4 MiB, 2^32-1), unknown types and flags, stream
ids never opened / zero / even / huge, data after close, repeated responses, truncated and
bit-flipped protobufs, junk fields, random bytes. A crash is any exception that is not a
`CocoonError` (the project's typed errors), one logged with its traceback by the code under
test, a bound broken (decoder buffer, stream tables, proxy routes), a hang (the task server),
or resident memory growing by more than --max-growth MiB after the warm-up.
Exit status 1 when anything crashed.

Run: .venv/bin/python bench/fuzz.py [--frames 1000000] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

from fuzztask import Crashes, TaskFuzz
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import DecodeError, Message

from cocoon.errors import CocoonError
from cocoon.protocols.gen import agent_pb2, guest_pb2, health_pb2, kata_types_pb2, ttrpc_pb2
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.proxy import AgentProxy
from cocoon.sandbox.relay import ProcessRelay, Stdio
from cocoon.ttrpc.connection import (
    ClientConnection,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
)
from cocoon.ttrpc.frame import HEADER_SIZE, MAX_DATA_SIZE
from cocoon.ttrpc.status import Status, StatusCode, code_name

HEADER = struct.Struct(">IIBB")
PAGE = os.sysconf("SC_PAGE_SIZE")

# --- seeds: the replies the agent really sends -------------------------------------------------

REPLIES: list[Message] = [
    empty_pb2.Empty(),
    agent_pb2.WaitProcessResponse(status=0), agent_pb2.WaitProcessResponse(status=137),
    agent_pb2.ReadStreamResponse(data=b"hello, world\n" * 3),
    agent_pb2.WriteStreamResponse(len=4096),
    agent_pb2.ListProcessesResponse(process_list=b"[1, 7, 12]"),
    agent_pb2.OOMEvent(container_id="c1"),
    agent_pb2.GuestDetailsResponse(mem_block_size_bytes=1 << 27, kernel_release="6.1.0-cloud",
                                   mem_total_bytes=240 << 20),
    agent_pb2.StatsContainerResponse(),
    health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),
    kata_types_pb2.Interface(name="eth0", mtu=1500, hwAddr="02:00:00:00:00:01"),
    agent_pb2.Routes(),
    guest_pb2.ListeningPortsResponse(ports=[22, 80, 8080]),
    guest_pb2.PortConnectResponse(connection=3),
    guest_pb2.PortWriteResponse(len=12), guest_pb2.PortReadResponse(data=b"HTTP/1.0 200"),
    guest_pb2.PortCloseResponse(), guest_pb2.WarmUpResponse(seconds=0.4),
    guest_pb2.TrimMemoryResponse(mem_free_bytes=1 << 27, zeroed_bytes=1 << 26, seconds=0.1),
]


def _response(status: Status, payload: bytes = b"") -> bytes:
    return ttrpc_pb2.Response(status=status.to_proto(), payload=payload).SerializeToString()


ENVELOPES: list[bytes] = [_response(Status(), m.SerializeToString()) for m in REPLIES] + [
    _response(Status(StatusCode.NOT_FOUND, "container c1 not found")),
    _response(Status(StatusCode.INTERNAL, "boom", (any_pb2.Any(type_url="x/y", value=b"z"),))),
    _response(Status(99, "a code nobody knows")),
]
# (type, flags, data): responses, data frames, closing frames
SHAPES: list[tuple[int, int, bytes]] = [(2, 0, e) for e in ENVELOPES] + [
    (3, 0, m.SerializeToString()) for m in REPLIES] + [
    (3, 5, b""), (3, 1, b"last"), (3, 4, b""), (3, 0, b""), (1, 0, b"")]


class Mutator:
    """Frames of the seed shapes on chosen stream ids, most of them broken some way."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def junk(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def data(self, data: bytes) -> bytes:
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0 and data:  # truncated protobuf
            return data[:rng.randrange(len(data))]
        if kind == 1 and data:  # flipped bits
            buf = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            return bytes(buf)
        if kind == 2:  # junk fields: random tags, lying varint lengths
            tag = rng.choice([0x08, 0x0A, 0x12, 0x1A, 0x22, 0x2A, 0x7A, 0xFA, 0x0F, 0x0B])
            return data + bytes([tag]) + self.junk(rng.randrange(12))
        if kind == 3:
            return self.junk(rng.randrange(64))
        if kind == 4 and data:  # a length-delimited field that claims more than there is
            return data + b"\x12\xff\xff\xff\x7f" + self.junk(rng.randrange(8))
        return data

    def frame(self, stream_ids: list[int], next_id: int) -> bytes:
        rng = self.rng
        type_, flags, data = rng.choice(SHAPES)
        if rng.random() < 0.7:
            sid = rng.choice(stream_ids) if stream_ids else 1
        else:
            sid = rng.choice([0, 2, next_id, next_id + 2 * rng.randrange(1, 100), 0xFFFF_FFFF,
                              0xFFFF_FFFE, rng.randrange(1 << 32)])
        if rng.random() < 0.5:
            data = self.data(data)
        if rng.random() < 0.1:
            type_ = rng.randrange(256)
        if rng.random() < 0.15:
            flags = rng.randrange(256)
        length = len(data)
        lie = rng.random()
        if lie < 0.03:
            length = rng.choice([MAX_DATA_SIZE + 1, 0xFFFF_FFFF, rng.randrange(1 << 32)])
        elif lie < 0.06:
            length = max(0, length + rng.randint(-8, 8))
        elif lie < 0.07:
            length = MAX_DATA_SIZE  # legal, but the payload never comes in full
        out = HEADER.pack(length, sid, type_, flags) + data
        if rng.random() < 0.01:
            out = out[:rng.randrange(len(out) + 1)]
        if rng.random() < 0.01:
            out = self.junk(rng.randrange(1, 32))
        return out

    def chunks(self, stream: bytes) -> list[bytes]:
        rng = self.rng
        if rng.random() < 0.5:
            return [stream]
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randint(1, 6)))
        return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


# --- harness ----------------------------------------------------------------------------------

class Crash(Exception):
    """A bound broken: not a protocol error but a bug."""


class Report:
    def __init__(self) -> None:
        self.frames: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.typed: Counter[str] = Counter()
        self.crashes: dict[str, tuple[int, str]] = {}

    def crash(self, target: str, err: BaseException) -> None:
        key = f"{target}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        count, tb = self.crashes.get(key, (0, ""))
        self.crashes[key] = (count + 1, tb or "".join(traceback.format_exception(err)))


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never has to wait (the fakes below never block)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise Crash("a coroutine waited where nothing should block")


def decode_event(event: ResponseReceived | DataReceived, reply: type[Message]) -> None:
    """What the host does with an event: the status as an error, the payload as the reply."""
    if isinstance(event, ResponseReceived):
        code_name(event.status.code)
        if not event.status.ok:
            str(event.status.to_error(method="/x/y", peer="fuzz"))
            return
        payload = event.payload
    else:
        payload = event.data or b""
    with contextlib.suppress(DecodeError):
        reply.FromString(payload)


def open_streams(conn: ClientConnection, rng: random.Random) -> dict[int, type[Message]]:
    opened: dict[int, type[Message]] = {}
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(4)
        sid, _ = conn.start_request("grpc.AgentService", "WaitProcess", b"\x0a\x02c1",
                                    client_streaming=kind in (1, 3), server_streaming=kind >= 2)
        opened[sid] = type(rng.choice(REPLIES))
        if kind in (1, 3) and rng.random() < 0.5:
            conn.close_send(sid)
        if rng.random() < 0.2:
            conn.abandon(sid)
    return opened


def check_connection(conn: ClientConnection | ServerConnection, opened: int) -> None:
    if conn._decoder.buffered > MAX_DATA_SIZE + HEADER_SIZE:
        raise Crash(f"decoder holds {conn._decoder.buffered} bytes")
    if len(conn._streams) > opened or len(conn._draining) > opened:
        raise Crash(f"{len(conn._streams)} streams, {len(conn._draining)} draining "
                    f"after opening {opened}")


def round_client(mut: Mutator, report: Report, count: int) -> None:
    rng = mut.rng
    conn = ClientConnection()
    opened = open_streams(conn, rng)
    sids = list(opened)
    burst = b"".join(mut.frame(sids, conn._next_stream_id) for _ in range(count))
    report.frames["client"] += count
    try:
        for chunk in mut.chunks(burst):
            conn.receive_data(chunk)
            for event in conn.events():
                decode_event(event, opened.get(event.stream_id, empty_pb2.Empty))
            check_connection(conn, len(opened))
    except CocoonError as err:
        report.typed[type(err).__name__] += 1


def round_server(mut: Mutator, report: Report, count: int) -> None:
    rng = mut.rng
    conn = ServerConnection()
    frames = []
    requests = [HEADER.pack(len(r), sid, 1, rng.choice([0, 0, 1, 2])) + r
                for sid in range(1, 2 * rng.randint(1, 5), 2)
                for r in [ttrpc_pb2.Request(service="grpc.AgentService", method="WaitProcess",
                                            payload=b"\x0a\x02c1").SerializeToString()]]
    frames.extend(requests)
    sids = list(range(1, 2 * len(requests), 2))
    frames.extend(mut.frame(sids, 2 * len(requests) + 1) for _ in range(count))
    report.frames["server"] += count + len(requests)
    opened = 0
    try:
        for chunk in mut.chunks(b"".join(frames)):
            conn.receive_data(chunk)
            for event in conn.events():
                opened += isinstance(event, RequestReceived)
                if rng.random() < 0.3 and event.stream_id in conn.open_streams:
                    conn.send_response(event.stream_id, Status())
            check_connection(conn, opened)
    except CocoonError as err:
        report.typed[type(err).__name__] += 1


class FakeWriter:
    """An asyncio.StreamWriter stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None


def round_proxy(mut: Mutator, report: Report, count: int) -> None:
    from cocoon.sandbox.proxyclient import ProxyClient
    from cocoon.ttrpc.frame import FrameDecoder

    rng = mut.rng
    proxy = AgentProxy("fuzz")
    agent = FakeWriter()
    proxy._agent_writer = agent  # type: ignore[assignment]
    local = FakeWriter()
    client = ProxyClient("client-1", local)  # type: ignore[arg-type]
    behind = ClientConnection()  # the local client's own view of its calls
    opened = open_streams(behind, rng)
    decoder = FrameDecoder()
    decoder.feed(bytes(_requests_of(behind, opened)))
    for frame in decoder:
        drive(proxy._from_client(client, frame))
    agent_sids = list(proxy._routes)
    burst = b"".join(mut.frame(agent_sids, proxy._next_id) for _ in range(count))
    report.frames["proxy"] += count
    from_agent = FrameDecoder()
    try:
        for chunk in mut.chunks(burst):
            from_agent.feed(chunk)
            for frame in from_agent:
                drive(proxy._from_agent(frame))
                local.out += client.take()  # what the client's pump would write
            if len(proxy._routes) > len(opened) or len(client.streams) > len(opened):
                raise Crash(f"{len(proxy._routes)} routes after opening {len(opened)}")
    except CocoonError as err:
        report.typed[f"proxy {type(err).__name__}"] += 1
    try:
        behind.receive_data(bytes(local.out))
        for event in behind.events():
            decode_event(event, opened.get(event.stream_id, empty_pb2.Empty))
    except CocoonError as err:
        report.typed[f"behind the proxy {type(err).__name__}"] += 1


class LongProxy:
    """One proxy and one local client kept across rounds, as in a monitor that runs for days."""

    def __init__(self) -> None:
        from cocoon.sandbox.proxyclient import ProxyClient

        self.proxy = AgentProxy("fuzz-long")
        self.proxy._agent_writer = FakeWriter()  # type: ignore[assignment]
        self.client = ProxyClient("client-1", FakeWriter())  # type: ignore[arg-type]
        self.next_sid = 1


LONG: list[LongProxy] = []


def round_proxy_long(mut: Mutator, report: Report, count: int) -> None:
    """Calls on a long-lived proxy, each finished by the agent in the end (a response or a
    closing data frame, whichever the burst did not already send): no route may outlive them."""
    from cocoon.ttrpc.frame import Frame, FrameDecoder, encode_frame

    if not LONG:
        LONG.append(LongProxy())
    long = LONG[0]
    proxy, rng = long.proxy, mut.rng
    for _ in range(rng.randint(1, 4)):
        request = ttrpc_pb2.Request(service="grpc.AgentService",
                                    method="ReadStdout").SerializeToString()
        flags = rng.choice([0, 1, 2])
        drive(proxy._from_client(long.client, Frame(long.next_sid, 1, flags, request)))
        long.next_sid += 2
    sids = list(proxy._routes)
    burst = b"".join(mut.frame(sids, proxy._next_id) for _ in range(count))
    report.frames["proxy"] += count
    decoder = FrameDecoder()
    try:
        for chunk in mut.chunks(burst):
            decoder.feed(chunk)
            for frame in decoder:
                drive(proxy._from_agent(frame))
                long.client.take()  # what the client's pump would write
    except CocoonError as err:
        report.typed[f"proxy {type(err).__name__}"] += 1
        drive(proxy.fail_pending("fuzz: the connection broke"))  # what the monitor does
    for sid, (_, _, unary) in list(proxy._routes.items()):
        final = Frame(sid, 2, 0, ENVELOPES[0])
        if not unary and rng.random() < 0.5:
            final = Frame(sid, 3, 5)
        drive(proxy._from_agent(Frame(*split_frame(encode_frame(final)))))
        long.client.take()
    long.proxy._agent_writer.out.clear()  # type: ignore[union-attr]
    if proxy._routes or long.client.streams:
        raise Crash(f"{len(proxy._routes)} routes and {len(long.client.streams)} client "
                    "streams outlive calls the agent finished")


def split_frame(data: bytes) -> tuple[int, int, int, bytes]:
    sid, type_, flags = HEADER.unpack_from(data)[1:]
    return sid, type_, flags, data[HEADER_SIZE:]


def _requests_of(conn: ClientConnection, opened: dict[int, type[Message]]) -> bytes:
    # re-encode the requests the connection made (start_request returned them; rebuild here)
    out = bytearray()
    for sid in opened:
        request = ttrpc_pb2.Request(service="grpc.AgentService", method="WaitProcess")
        data = request.SerializeToString()
        out += HEADER.pack(len(data), sid, 1, 0) + data
    return bytes(out)


class FuzzTtrpc:
    """Stands for `Client`: answers each call with the next mutated frame's payload, decoded and
    mapped exactly as `Client.call` does."""

    peer = "fuzz"

    def __init__(self, mut: Mutator) -> None:
        self.mut = mut

    def answer(self) -> tuple[Status, bytes]:
        raw = self.mut.frame([1], 3)
        data = raw[HEADER_SIZE:]
        if self.mut.rng.random() < 0.5:
            try:
                response = ttrpc_pb2.Response.FromString(data)
            except DecodeError:
                return Status(), data
            return Status.from_proto(response.status), response.payload
        return Status(), data

    async def call(self, service: str, method: str, request: Message, response_type: type[Any],
                   **kwargs: Any) -> Any:
        from cocoon.errors import RPCError

        status, payload = self.answer()
        if not status.ok:
            raise status.to_error(method=method, peer=self.peer)
        try:
            return response_type.FromString(payload)
        except DecodeError as err:
            raise RPCError(StatusCode.INTERNAL, f"cannot decode: {err}") from err


def validator_calls(agent: AgentClient) -> list[Callable[[], Coroutine[Any, Any, Any]]]:
    from cocoon.protocols.gen import kata_oci_pb2

    return [
        lambda: agent.wait_process("c1"), lambda: agent.read_stdout("c1", size=64),
        lambda: agent.read_stderr("c1"), lambda: agent.write_stdin("c1", "", b"x" * 12),
        lambda: agent.list_processes("c1", "json"), lambda: agent.get_oom_event(),
        lambda: agent.stats_container("c1"), lambda: agent.guest_details(),
        lambda: agent.health(), lambda: agent.listening_ports([22], 0.1),
        lambda: agent.port_connect(80), lambda: agent.port_write(3, b"GET / HTTP/1.0\r\n"),
        lambda: agent.port_read(3, 64), lambda: agent.port_close(3),
        lambda: agent.warm_up(), lambda: agent.trim_memory(0),
        lambda: agent.update_interface(kata_types_pb2.Interface()),
        lambda: agent.update_routes(agent_pb2.Routes()),
        lambda: agent.create_container("c1", kata_oci_pb2.Spec()),
        lambda: agent.list_pids("c1"),
    ]


def round_validators(mut: Mutator, report: Report, count: int) -> None:
    agent = AgentClient(FuzzTtrpc(mut))  # type: ignore[arg-type]
    calls = validator_calls(agent)
    for _ in range(count):
        try:
            drive(mut.rng.choice(calls)())
        except CocoonError as err:
            report.typed[type(err).__name__] += 1
    report.frames["validators"] += count


class FuzzAgent(AgentClient):
    """The relay's agent: every answer decoded from a mutated frame."""

    def __init__(self, mut: Mutator) -> None:
        super().__init__(FuzzTtrpc(mut))  # type: ignore[arg-type]
        self.reads = 0

    async def read_stdout(self, container_id: str, exec_id: str = "", size: int = 1 << 20,
                          *, timeout: float | None = None) -> bytes:
        self.reads += 1
        if self.reads > 6:
            return b""
        return await super().read_stdout(container_id, exec_id, size, timeout=timeout)

    read_stderr = read_stdout


def round_relay(mut: Mutator, report: Report, devnull: int) -> None:
    agent = FuzzAgent(mut)

    async def run() -> int:
        stdio = Stdio(stdin=devnull, stdout=devnull, stderr=devnull)
        return await ProcessRelay(agent, "c1", "", stdio).run(forward_signals=False)

    try:
        status = asyncio.run(run())
        if not 0 <= status <= 255:
            raise Crash(f"exit status {status}")
    except CocoonError as err:
        report.typed[f"relay {type(err).__name__}"] += 1
    report.frames["relay"] += agent.reads + 1


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / (1 << 20)


TASK: list[TaskFuzz] = []
CRASHES = Crashes()


def round_task(mut: Mutator, report: Report, count: int) -> None:
    if not TASK:
        TASK.append(TaskFuzz(mut.rng, mut.data))
    report.frames["task"] += count
    TASK[0].round(count, CRASHES)


TARGETS: dict[str, tuple[Callable[[Mutator, Report, int], None], float]] = {
    "client": (round_client, 0.4), "server": (round_server, 0.1),
    "proxy": (round_proxy, 0.2), "proxy-long": (round_proxy_long, 0.1),
    "validators": (round_validators, 0.2), "task": (round_task, 0.1),
}


def main() -> int:
    with contextlib.ExitStack() as stack:
        return fuzz(stack)


def fuzz(stack: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--burst", type=int, default=32, help="frames per round at most")
    parser.add_argument("--relay-rounds", type=int, default=300)
    parser.add_argument("--max-growth", type=float, default=64.0,
                        help="MiB of resident growth after the warm-up that counts as a crash")
    args = parser.parse_args()
    # the targets log every fault they refuse: only what comes with a traceback is kept (a crash)
    stack.enter_context(CRASHES.watching("cocoon"))
    os.chdir(stack.enter_context(tempfile.TemporaryDirectory(prefix="cocoon-fuzz-")))
    rng = random.Random(args.seed)
    mut = Mutator(rng)
    report = Report()
    names = list(TARGETS)
    weights = [TARGETS[n][1] for n in names]
    start = time.perf_counter()
    base = None
    peak = 0.0
    done = 0
    devnull = os.open(os.devnull, os.O_RDWR)
    for i in range(args.relay_rounds):
        try:
            round_relay(mut, report, devnull)
        except Exception as err:
            report.crash("relay", err)
        if i == args.relay_rounds // 2:
            base = rss_mib()
    while done < args.frames:
        name = rng.choices(names, weights)[0]
        count = rng.randint(1, args.burst)
        began = time.perf_counter()
        try:
            TARGETS[name][0](mut, report, count)
            if CRASHES.records:
                record = CRASHES.records.pop()
                CRASHES.records.clear()
                raise Crash(f"logged with a traceback: {record.getMessage()[:200]}")
        except Exception as err:
            report.crash(name, err)
        report.seconds[name] += time.perf_counter() - began
        done += count
        if done % 50_000 < count:
            rss = rss_mib()
            if base is None or done < 100_000:
                base = rss
            peak = max(peak, rss)
    elapsed = time.perf_counter() - start
    total = sum(report.frames.values())
    growth = peak - (base or peak)
    if growth > args.max_growth:
        report.crash("memory", Crash(f"resident memory grew {growth:.1f} MiB"))
    print(f"frames: {total} ({', '.join(f'{k} {v}' for k, v in sorted(report.frames.items()))})")
    print(f"time: {elapsed:.1f} s, frames/s: {total / elapsed:,.0f}")
    print(f"memory: resident peak {peak:.1f} MiB, growth after warm-up {growth:.1f} MiB")
    for name in sorted(report.seconds):
        frames = report.frames[name.removesuffix("-long")]
        print(f"  {name}: {report.seconds[name]:.1f} s" + (
            f", {frames / report.seconds[name]:,.0f} frames/s" if name == "task" else ""))
    print("typed errors: " + ", ".join(f"{k} {v}" for k, v in report.typed.most_common()))
    if TASK:
        print("task server answers: " + ", ".join(
            f"{k} {v}" for k, v in TASK[0].statuses.most_common()))
        TASK[0].close()
    print(f"crashes: {sum(c for c, _ in report.crashes.values())}")
    for key, (count, tb) in report.crashes.items():
        print(f"\n== {count} x {key}\n{tb}", file=sys.stderr)
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
