"""A parcel the bus wrote twice (its XADD landed, but the reply was lost to a timeout or a
dropped connection, so the sender wrote it again with the same number) is handled once: its
items (a forwarded command without a request id, frames of events) must not be applied or
shown twice, and it is not a gap (no needless resync)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest
from redis.asyncio import Redis

from actors.bus import Bus, node_key
from actors.metrics import Metrics
from protocol.bus import Control, Item, Parcel

pytestmark = pytest.mark.timeout(20)


async def test_a_parcel_written_twice_is_handled_once_and_is_no_gap(
    redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-dup-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    got: list[Item] = []
    gaps: list[str] = []
    arrived = asyncio.Event()

    def on_item(_src: str, item: Item) -> None:
        got.append(item)
        arrived.set()

    bus = Bus(redis, prefix, f"recv-{uuid.uuid4().hex[:6]}", Metrics())
    bus.start(on_item, gaps.append, lambda: None)
    try:
        inbox = node_key(prefix, bus.node_id, "in")

        def parcel(n: int) -> bytes:
            ctl = Control(conn_id=f"c{n}", board_id=uuid.UUID(int=n), op="closed")
            return msgspec.msgpack.encode(Parcel(src="sender", n=n, items=[ctl]))

        for data in (parcel(1), parcel(2), parcel(2), parcel(3)):  # the second copy of 2: a retry
            await redis.xadd(inbox, {"m": data})
        async with asyncio.timeout(10):
            while not any(isinstance(i, Control) and i.conn_id == "c3" for i in got):
                arrived.clear()
                await arrived.wait()
        assert [i.conn_id for i in got if isinstance(i, Control)] == ["c1", "c2", "c3"]
        assert gaps == []
    finally:
        await bus.close()
        await redis.aclose()
