"""Webhooks with several server processes on one database (docs/WEBHOOKS.md): the work is
shared through leases in PostgreSQL, each webhook delivered by one process at a time, in
order; a delivery cut short by a shutdown is delivered again by another process."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aiohttp import web

from server.config import ConfigError, load_settings
from tests.conftest import create_board, create_column
from tests.webhook_receiver import (
    FAST,
    create_webhook,
    no_webhooks_left,  # noqa: F401 (an autouse fixture)
    receiver,
)

pytestmark = pytest.mark.timeout(90)


async def test_two_dispatching_servers_deliver_each_event_once_in_order(http, start_server):
    a = await start_server(**FAST)
    b = await start_server(**FAST)
    async with receiver() as rec:
        boards = [(await create_board(http, a.base, f"B{i}"))["id"] for i in range(3)]
        hooks = {}
        for bid in boards:
            for _ in range(2):
                made = await create_webhook(http, a.base, bid, rec.url)
                hooks[made["id"]] = bid
        # (boards are written through one node: a board has one owner until multi-node lands)
        for n in range(10):
            for bid in boards:
                await create_column(http, a.base, bid, f"c{n}")
        got = await rec.wait_for(len(hooks) * 10, timeout_s=40)
        await asyncio.sleep(0.3)  # anything sent twice would arrive within a few polls
        by_hook: dict[str, list[int]] = {}
        for r in rec.received:
            by_hook.setdefault(r.body["webhook_id"], []).append(r.body["seq"])
        assert by_hook == {h: list(range(1, 11)) for h in hooks}, by_hook
        assert len(got) == len(rec.received) == 60
    # between them the two processes delivered each event once (which one delivered what is up
    # to their polls: usually both share, but a busy machine may let one take everything)
    counts = []
    for srv in (a, b):
        async with http.get(f"{srv.base}/metrics") as r:
            text = await r.text()
        line = [
            x
            for x in text.splitlines()
            if x.startswith('boardcast_webhook_deliveries_total{outcome="delivered"}')
        ]
        counts.append(float(line[0].split()[-1]) if line else 0.0)
    assert sum(counts) == 60, counts


async def test_a_delivery_cut_by_shutdown_is_delivered_again_by_another_server(http, start_server):
    a = await start_server(**FAST)
    async with receiver() as rec:
        held = asyncio.Event()
        release = asyncio.Event()

        async def slow_first(request: web.Request) -> None:
            if not held.is_set():
                held.set()
                await release.wait()  # the first attempt hangs until its sender gives up

        rec.before = slow_first
        bid = (await create_board(http, a.base))["id"]
        made = await create_webhook(http, a.base, bid, rec.url)
        await create_column(http, a.base, bid)
        await asyncio.wait_for(held.wait(), 10)
        t0 = asyncio.get_running_loop().time()
        await a.stop()  # cancels the hanging attempt and gives the lease back
        assert asyncio.get_running_loop().time() - t0 < 5
        b = await start_server(**FAST)
        got = await rec.wait_for(1)
        assert got[0].body["seq"] == 1 and got[0].body["webhook_id"] == made["id"]
        release.set()
        assert b.base


def test_the_lease_must_outlive_a_delivery() -> None:
    with pytest.raises(ConfigError, match="BOARDCAST_WEBHOOK_LEASE_S"):
        load_settings({"BOARDCAST_WEBHOOK_TIMEOUT_S": "30", "BOARDCAST_WEBHOOK_LEASE_S": "60"})
    with pytest.raises(ConfigError, match="BOARDCAST_WEBHOOK_BACKOFF_MAX_S"):
        load_settings({"BOARDCAST_WEBHOOK_BACKOFF_BASE_S": "10", "BOARDCAST_WEBHOOK_BACKOFF_MAX_S": "5"})
    with pytest.raises(ConfigError, match="BOARDCAST_WEBHOOK_ALLOWED_NETWORKS"):
        load_settings({"BOARDCAST_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8, nonsense"})
    s = load_settings(
        {
            "BOARDCAST_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32,fd00::/8",
            "BOARDCAST_WEBHOOK_ALLOW_PRIVATE": "off",
        }
    )
    assert [str(n) for n in s.webhook_allowed_networks] == ["127.0.0.1/32", "fd00::/8"]
    assert dataclasses.replace(s).webhook_allow_private is False
