"""A bounded per-stream queue between a connection's read loop and the code consuming the stream.

Bounded so that a stream nobody reads cannot grow without limit; the read loop waits a while
for room (back-pressure on the whole connection, as in containerd/ttrpc) and then gives up on
that one stream. Failing the inbox (connection lost, stream abandoned) wakes its reader with
the error once the items already queued are taken.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_LIMIT = 64


class Inbox(Generic[T]):
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._error: BaseException | None = None
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    @property
    def failed(self) -> bool:
        return self._error is not None

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> bool:
        """Queue `item`; False when full. Items put after `fail()` are dropped (True)."""
        if self._error is not None:
            return True
        if len(self._items) >= self._limit:
            return False
        self._items.append(item)
        self._wake("_getter")
        return True

    async def put(self, item: T, timeout: float) -> bool:
        """Queue `item`, waiting up to `timeout` seconds for room; False if none came."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not self.put_nowait(item):
                    self._putter = loop.create_future()
                    try:
                        await self._putter
                    finally:
                        self._putter = None
        except TimeoutError:
            return False
        return True

    def fail(self, error: BaseException) -> None:
        """After the queued items, `get()` raises `error`; later items are dropped."""
        if self._error is None:
            self._error = error
        self._wake("_getter")
        self._wake("_putter")

    async def get(self) -> T:
        while not self._items:
            if self._error is not None:
                raise self._error
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = self._items.popleft()
        self._wake("_putter")
        return item

    def _wake(self, attr: str) -> None:
        waiter: asyncio.Future[None] | None = getattr(self, attr)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
