"""A board whose snapshot is larger than a connection's outbound bound can be joined: the one
big `joined` frame does not make its peer a slow consumer, while a peer that then stops reading
is still closed once what queues behind the snapshot passes the bound."""

from __future__ import annotations

import asyncio

from server.keys import METRICS
from tests.conftest import create_board, create_column
from tests.test_ws_slow_consumer import WINDOW, RawWsClient, _send_windowed

BOUND = 64 * 1024
# 300 descriptions of 20,000 characters: a snapshot of 6 MB, more than the kernel's send buffer
# holds (net.ipv4.tcp_wmem caps it at 4 MB), so most of it waits in the server's transport.
CARDS = 300


async def test_a_snapshot_larger_than_the_outbound_bound_is_delivered(http, start_server, connect):
    srv = await start_server(outbound_buffer_bytes=BOUND)
    bid = (await create_board(http, srv.base, "Large"))["id"]
    col = (await create_column(http, srv.base, bid))["id"]

    async def create(i: int) -> str:
        body = {"column_id": col, "title": f"c{i}", "description": f"{i:04d}" * 5000}
        async with http.post(f"{srv.base}/api/v1/boards/{bid}/cards", json=body) as r:
            assert r.status == 201
            card_id: str = (await r.json())["id"]
            return card_id

    cards = [
        c for i in range(0, CARDS, 20) for c in await asyncio.gather(*(create(i + j) for j in range(20)))
    ]
    card = cards[0]
    metrics = srv.app[METRICS].registry

    def slow_closed() -> float:
        return metrics.get_sample_value("boardcast_ws_closed_total", {"reason": "slow_consumer"}) or 0

    # A peer with a small receive window reads the snapshot slowly: the server's transport
    # holds most of the frame for a while.
    slow = await RawWsClient.connect(srv.ws_url, rcvbuf=4096)
    try:
        await slow.send({"type": "join", "rid": "j", "board_id": bid})
        await slow.read_until(lambda: any(m["type"] == "joined" for m in slow.messages))
        assert slow.close_code is None, (slow.close_code, slow.close_reason)
        joined = next(m for m in slow.messages if m["type"] == "joined")
        assert len(joined["snapshot"]["cards"]) == CARDS
        assert slow_closed() == 0

        # From here on it reads nothing: events queue behind the snapshot and the bound holds.
        writer = await connect("msgpack", url=srv.ws_url)
        await writer.join(bid, since_seq=joined["seq"])  # no snapshot: aiohttp reads 4 MB at most
        rids: list[str] = []
        while not slow_closed():
            assert len(rids) < 2000, "the peer that stopped reading was never closed"
            ops = [
                {"op": "card.update", "card_id": card, "description": f"{len(rids) + i:05d}" * 4000}
                for i in range(WINDOW)
            ]
            rids += await _send_windowed(writer, bid, ops, WINDOW)
            await writer.wait_answers(rids[-WINDOW:], timeout=30)
        assert not writer.closed.is_set()
        await slow.read_until(lambda: False)
        assert slow.close_code == 4000, (slow.close_code, slow.close_reason)
    finally:
        slow.close()
    assert slow_closed() == 1
