"""Two `boardcast serve` processes writing one board at once (a rolling deploy's minute, or an
operator trying to scale before several nodes are supported): each process runs its own copy
of the board, each activation takes a new epoch, so the older copy's commits are fenced out
and it stops (its viewers are told `board_unavailable` and join again, which activates the
board anew from Postgres and fences the other copy). Commands may fail; an acknowledged
command must never be missing from the event log. The board judges a commit
whose outcome it did not hear by the commit's own token in the log, never by the seq it
finds there, which the other process may have reached with its own commands."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.test_ratelimit_processes import serve_processes
from tests.wsclient import WsClient

pytestmark = pytest.mark.timeout(90)

PER_CLIENT = 240
BURST = 2
CORE = {"BOARDCAST_AUTH": "none", "BOARDCAST_RATE_LIMIT": "off", "BOARDCAST_RATE_WS_COMMANDS": "100000/1"}


async def _storm(ws: WsClient, bid: str, col: str, tag: str) -> dict[str, dict]:
    """Commands in small pipelined bursts: batches of a few commands on each process, so the
    two processes often reach the same seq with commits of the same size."""
    answers: dict[str, dict] = {}
    for burst in range(PER_CLIENT // BURST):
        rids = [f"{tag}-{burst}-{i}" for i in range(BURST)]
        for rid in rids:
            await ws.send_cmd(bid, {"op": "card.create", "column_id": col, "title": rid}, rid=rid)
        got = await ws.wait_answers(rids, timeout=30)
        answers |= got
        if any(a["type"] == "error" for a in got.values()):
            # The board may have stopped here (fenced out): join again, as a client would on
            # `left` with `board_unavailable`.
            await ws.join(bid)
    return answers


async def test_two_processes_writing_one_board_never_ack_what_was_not_stored(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        serve_processes(2, tmp_path, database_url, redis_url, redis_prefix, CORE) as nodes,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{nodes[0]}/api/v1/boards", json={"title": "two writers"}) as r:
            bid = (await r.json())["id"]
        async with http.post(f"{nodes[0]}/api/v1/boards/{bid}/columns", json={"title": "c"}) as r:
            col = (await r.json())["id"]
        clients = []
        for n, base in enumerate(nodes):
            for k in range(2):
                ws = await WsClient.connect(http, base.replace("http", "ws", 1) + "/ws", "msgpack")
                await ws.join(bid)
                clients.append((f"n{n}c{k}", ws))
        try:
            results = await asyncio.gather(*(_storm(ws, bid, col, tag) for tag, ws in clients))
        finally:
            for _, ws in clients:
                await ws.close()

    acked = {rid: a["seq"] for answers in results for rid, a in answers.items() if a["type"] == "ack"}
    failed = [a for answers in results for a in answers.values() if a["type"] != "ack"]
    # not_joined: sent after the board stopped on that process and before the client joined again
    assert all(a["code"] in ("unavailable", "internal", "not_joined") for a in failed), failed[:3]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT seq, request_id FROM board_events WHERE board_id = $1 ORDER BY seq", uuid.UUID(bid)
        )
        cards = await conn.fetch("SELECT title FROM cards WHERE board_id = $1", uuid.UUID(bid))
    finally:
        await conn.close()
    stored = {r["request_id"]: r["seq"] for r in rows if r["request_id"] is not None}
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # the log has no gaps
    lost = {rid: seq for rid, seq in acked.items() if stored.get(rid) != seq}
    assert not lost, f"{len(lost)} acked commands are not stored as acked: {list(lost.items())[:5]}"
    assert sorted(c["title"] for c in cards) == sorted(stored)  # every stored command made its card, once
    assert len(acked) > 0
