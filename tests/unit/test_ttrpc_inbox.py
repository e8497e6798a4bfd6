"""The bounded per-stream inbox: order, bounds, back-pressure and failure."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from cocoon.errors import ConnectionLostError
from cocoon.ttrpc.inbox import Inbox


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


def test_items_in_order_and_bounded() -> None:
    async def main() -> None:
        inbox: Inbox[int] = Inbox(limit=2)
        assert inbox.put_nowait(1) and inbox.put_nowait(2)
        assert not inbox.put_nowait(3)
        assert [await inbox.get(), await inbox.get()] == [1, 2]
        assert len(inbox) == 0
    run(main())


def test_put_waits_for_room_and_gives_up_after_timeout() -> None:
    async def main() -> None:
        inbox: Inbox[int] = Inbox(limit=1)
        inbox.put_nowait(1)
        assert not await inbox.put(2, timeout=0.05)
        putter = asyncio.create_task(inbox.put(2, timeout=5))
        await asyncio.sleep(0.01)
        assert not putter.done()
        assert await inbox.get() == 1
        assert await putter
        assert await inbox.get() == 2
    run(main())


def test_fail_wakes_the_reader_after_queued_items() -> None:
    async def main() -> None:
        inbox: Inbox[int] = Inbox()
        getter = asyncio.create_task(inbox.get())
        await asyncio.sleep(0.01)
        inbox.put_nowait(7)
        assert await getter == 7
        inbox.put_nowait(8)
        inbox.fail(ConnectionLostError("gone"))
        assert inbox.failed
        assert inbox.put_nowait(9)  # dropped, not queued
        assert await inbox.get() == 8
        with pytest.raises(ConnectionLostError):
            await inbox.get()
        full: Inbox[int] = Inbox(limit=1)
        full.put_nowait(1)
        putter = asyncio.create_task(full.put(2, timeout=5))
        await asyncio.sleep(0.01)
        full.fail(ConnectionLostError("gone"))
        assert await putter  # woken at once; the item is dropped
    run(main())
