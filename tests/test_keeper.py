"""The keeper thread (actors/keeper.py) renews a node's leases and heartbeat whatever the
event loop is doing: a loop blocked for most of a lease's TTL keeps its leases, one stalled
past ``stall_s`` stops renewing (the lease expires and the loss reaches the loop), and a
lease let go is no longer renewed."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from redis.asyncio import Redis

from actors.keeper import Keeper
from actors.lease import RENEW_SCRIPT, BoardLeases, Lease

pytestmark = pytest.mark.timeout(30)


async def test_a_busy_loop_keeps_its_leases_and_a_stalled_one_loses_them(
    redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-keeper-{uuid.uuid4().hex[:6]}"
    client = Redis.from_url(redis_url)
    sync = redis.Redis.from_url(redis_url)
    keeper = Keeper(sync, RENEW_SCRIPT, lease_ttl_s=1.0, interval_s=0.1, stall_s=0.7)
    a = BoardLeases(client, prefix, node_id="node-a", ttl_s=1.0, renew_s=0.1)
    b = BoardLeases(client, prefix, node_id="node-b", ttl_s=1.0, renew_s=0.1)
    a.keeper = keeper
    keeper.start()
    alive_key = f"{prefix}:{{n:node-a}}:alive"
    keeper.heartbeat(alive_key, 1000, None, "node-a")
    try:
        boards = [uuid.uuid4(), uuid.uuid4()]
        lost: list[Lease] = []
        kept = []
        for board in boards:
            lease = await a.claim(board)
            assert lease is not None
            kept.append(a.keep(lease, on_lost=lost.append))
        # The loop blocked for 0.6 s (over half the TTL, under stall_s): the thread renewed.
        time.sleep(0.6)  # noqa: ASYNC251 (blocking the loop on purpose)
        await asyncio.sleep(0.3)
        assert lost == [] and await b.claim(boards[0]) is None
        assert await client.exists(alive_key)
        # One let go: it expires on its own, not reported lost.
        kept[1].cancel()
        await asyncio.sleep(1.3)
        assert lost == []
        assert await b.claim(boards[1]) is not None
        # Stalled past stall_s: nothing is renewed any more; once the loop runs again the
        # loss of the remaining lease reaches it.
        time.sleep(2.0)  # noqa: ASYNC251 (stall_s, then the lease's validity, run out)
        assert keeper.stalled
        await asyncio.sleep(0.3)
        assert [lease.board_id for lease in lost] == [boards[0]]
        assert await b.claim(boards[0]) is not None
    finally:
        await keeper.stop()
        await client.aclose()
