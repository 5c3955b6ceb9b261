"""Presence across nodes (issue 9, "Presence is board-wide"): a viewer on one node sees the
viewers of the other nodes join, change state and leave, and the viewers of a node that dies
disappear from everybody's presence within a bounded time (node heartbeats), never as
zombies."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.nodes import Nodes, start_nodes
from tests.test_nodes_convergence import new_board
from tests.wsclient import WsClient, new_rid

pytestmark = pytest.mark.timeout(60)


def presence(ws: WsClient, bid: str) -> dict[str, dict[str, Any]]:
    """Who views the board as this connection was told: its last `joined` reply's viewers
    with every `presence` diff after it applied; conn id -> state."""
    view: dict[str, dict[str, Any]] = {}
    for m in ws.log:
        if str(m.get("board_id")) != bid:
            continue
        if m["type"] == "joined":
            view = {c["conn_id"]: c.get("state") or {} for v in m["viewers"] for c in v["connections"]}
        elif m["type"] == "presence":
            for c in m.get("left", []):
                assert c["conn_id"] in view, ("left but never seen", c, view)
                del view[c["conn_id"]]
            for c in m.get("joined", []):
                assert c["conn_id"] not in view, ("joined twice", c)
                view[c["conn_id"]] = c.get("state") or {}
            for c in m.get("updated", []):
                assert c["conn_id"] in view, ("updated but never seen", c, view)
                view[c["conn_id"]] = c.get("state") or {}
    return view


async def until_presence(
    ws: WsClient, bid: str, want: dict[str, dict[str, Any]], timeout: float = 10
) -> None:
    await ws.wait_until(lambda _: presence(ws, bid) == want, timeout, f"presence {want}")


async def viewer(nodes: Nodes, i: int) -> WsClient:
    return await WsClient.connect(nodes.http, nodes[i].ws_url, "json" if i % 2 else "msgpack")


async def test_presence_spans_nodes_and_a_dead_nodes_viewers_disappear(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-presence-{uuid.uuid4().hex[:8]}"
    async with start_nodes(3, tmp_path, database_url, redis_url, prefix) as nodes:
        bid, _ = await new_board(nodes)
        a = await viewer(nodes, 0)
        assert (await a.join(bid))["type"] == "joined"
        assert (await nodes.owner(bid)) is nodes[0]  # first needed there
        b, c = await viewer(nodes, 1), await viewer(nodes, 2)
        ids = {w: w.welcome["conn_id"] for w in (a, b, c)}
        for w in (b, c):
            joined = await w.join(bid)
            assert ids[a] in {x["conn_id"] for v in joined["viewers"] for x in v["connections"]}
        everyone = {ids[w]: {} for w in (a, b, c)}
        for w in (a, b, c):  # the owner's viewer and both remote ones see all three
            await until_presence(w, bid, everyone)

        # a state set on node 1 reaches the viewers on nodes 0 and 2
        await b.send({"type": "presence", "board_id": bid, "state": {"cursor_x": 7, "typing": True}})
        moved = {**everyone, ids[b]: {"cursor_x": 7, "typing": True}}
        for w in (a, b, c):
            await until_presence(w, bid, moved)

        # a viewer leaving on node 2 leaves everybody's presence
        assert (await c.request({"type": "leave", "rid": new_rid(), "board_id": bid}))["reason"] == "left"
        without_c = {k: v for k, v in moved.items() if k != ids[c]}
        for w in (a, b):
            await until_presence(w, bid, without_c)

        # node 1 dies with its viewer: gone from the owner's and node 2's presence in bounded time
        assert (await c.join(bid))["type"] == "joined"
        for w in (a, b, c):
            await until_presence(w, bid, {**moved})
        killed = time.monotonic()
        await nodes[1].kill()
        for w in (a, c):
            await until_presence(w, bid, {k: v for k, v in moved.items() if k != ids[b]}, timeout=15)
        gone_s = time.monotonic() - killed
        print(f"\na dead node's viewer left presence {gone_s:.2f} s after kill -9 (node TTL 2 s)")
        assert gone_s < 6, gone_s
        for w in (a, b, c):
            await w.close()
