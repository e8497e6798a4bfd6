"""bench/fuzz.py's `task` target: the containerd shim's task service behind its ttrpc server.

Each round writes a burst of request frames on a fresh connection to one long-lived server
(`tests.framework.taskfuzz.TaskTarget`, renewed every `RENEW` rounds so that c1 and c2 come
back): every method of containerd.task.v2.Task, with valid seed requests on known, unknown and
broken ids, mutated (truncated and bit-flipped protobuf, junk fields, lying lengths), some of
them huge (a field of up to 3 MiB), for another method, an unknown method or service, with any
deadline and flags, on stream ids that increase or do not. The server must answer with ttrpc
responses, close the connection within a deadline once the client is done, raise nothing that
is not a Cocoon error, and answer Connect on a new connection afterwards.

Imported by fuzz.py as `fuzztask`, beside it (as benchlib is); the target it drives lives in
tests/framework, shared with the hypothesis tests, so the repository root goes on sys.path.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
from collections import Counter
from pathlib import Path

from cocoon.protocols.gen import ttrpc_pb2
from cocoon.ttrpc.frame import MAX_DATA_SIZE, MessageType
from cocoon.ttrpc.status import code_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.framework import taskfuzz

HEADER = struct.Struct(">IIBB")
RENEW = 200     # rounds on one server before it is made again
ALIVE_EVERY = 20  # rounds between two Connect checks on a new connection
Crashes = taskfuzz.Crashes
SEEDS = [(method, request.SerializeToString()) for method, request in taskfuzz.seeds()]


class Crash(Exception):
    """The task server broke a promise (see tests/framework/taskfuzz.py)."""


class TaskFuzz:
    def __init__(self, rng: random.Random, mutate: object) -> None:
        self.rng = rng
        self.mutate = mutate  # fuzz.Mutator.data: bytes -> bytes
        self.loop = asyncio.new_event_loop()
        self.target: taskfuzz.TaskTarget | None = None
        self.rounds = 0
        self.statuses: Counter[str] = Counter()

    def frame(self, sid: int) -> bytes:
        rng = self.rng
        method, payload = rng.choice(SEEDS)
        if rng.random() < 0.5:
            payload = self.mutate(payload)  # type: ignore[operator]
        if rng.random() < 0.01:  # a huge id (field 1), up to 3 MiB
            size = rng.randrange(1 << 16, 3 << 20)
            payload = b"\x0a" + _varint(size) + b"x" * size + payload
        if rng.random() < 0.1:
            method = rng.choice(taskfuzz.METHODS)
        if rng.random() < 0.03:
            method = rng.choice(["", "Nope", "State\0", "x" * 1000])
        service = taskfuzz.SERVICE if rng.random() > 0.03 else rng.choice(
            ["", "grpc.AgentService", "containerd.task.v3.Task"])
        timeout = 2_000_000_000
        if rng.random() < 0.05:
            timeout = rng.choice([0, -1, 1, -(1 << 63), (1 << 63) - 1])
        flags = rng.randrange(256) if rng.random() < 0.05 else 0
        envelope = ttrpc_pb2.Request(service=service, method=method, payload=payload,
                                     timeout_nano=timeout).SerializeToString()
        if rng.random() < 0.05:
            envelope = self.mutate(envelope)  # type: ignore[operator]
        length = len(envelope)
        lie = rng.random()
        if lie < 0.02:
            length = rng.choice([MAX_DATA_SIZE + 1, 0xFFFF_FFFF, rng.randrange(1 << 32)])
        elif lie < 0.04:
            length = max(0, length + rng.randint(-8, 8))
        type_ = MessageType.REQUEST if rng.random() > 0.03 else rng.randrange(256)
        return HEADER.pack(length, sid, type_, flags) + envelope

    def burst(self, count: int) -> bytes:
        rng = self.rng
        sid, out = 1, bytearray()
        for _ in range(count):
            if rng.random() < 0.05:
                sid = rng.choice([0, 2, sid, rng.randrange(1 << 32)])
            out += self.frame(sid)
            sid = (sid + 2) | 1
        return bytes(out)

    def round(self, count: int, crashes: taskfuzz.Crashes) -> None:
        self.loop.run_until_complete(self._round(count, crashes))

    async def _round(self, count: int, crashes: taskfuzz.Crashes) -> None:
        if self.target is None or self.rounds % RENEW == 0:
            if self.target is not None:
                await self.target.close()
            self.target = taskfuzz.TaskTarget()
        self.rounds += 1
        outcome = await self.target.exchange(self.burst(count))
        for status in outcome.statuses:
            self.statuses[code_name(status.code)] += 1
        if outcome.broken_answer:
            raise Crash(f"the server answered with a {outcome.broken_answer}")
        if not outcome.closed_in_time:
            raise Crash(f"the server did not close a finished connection within "
                        f"{taskfuzz.DEADLINE} s")
        if crashes.records:
            record = crashes.records.pop()
            crashes.records.clear()
            raise Crash(f"a handler raised: {record.getMessage()[:200]}")
        if self.rounds % ALIVE_EVERY == 0 and not await self.target.alive():
            raise Crash("the server no longer answers Connect on a new connection")

    def close(self) -> None:
        if self.target is not None:
            self.loop.run_until_complete(self.target.close())
        self.loop.close()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
