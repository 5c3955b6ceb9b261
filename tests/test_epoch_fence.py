"""Two activations of one board on one database (two servers that do not see each other's
leases, or one paused process and its replacement): each activation takes a new epoch, and a
commit of the older one is fenced out. Its senders are told `unavailable`, its viewers
`board_unavailable`, nothing it held is acked or stored, and a viewer who joins again reaches
the board as the newer activation left it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from server.keys import SETTINGS
from tests.conftest import create_board, create_column

pytestmark = pytest.mark.timeout(60)


async def _log(database_url: str, board_id: str) -> list[tuple[int, str | None]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT seq, request_id FROM board_events WHERE board_id = $1 ORDER BY seq", uuid.UUID(board_id)
        )
        return [(r["seq"], r["request_id"]) for r in rows]
    finally:
        await conn.close()


async def _epoch(database_url: str, board_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT epoch FROM boards WHERE id = $1", uuid.UUID(board_id)))
    finally:
        await conn.close()


async def test_the_older_activation_is_fenced_out_and_acks_nothing(
    http, server, start_server, connect, database_url
) -> None:
    # A second node on the same database that cannot see the first one's leases (a split
    # brain: its own Redis key space), so that both activate the board: only the fence in
    # PostgreSQL keeps the older activation from committing.
    other = await start_server(redis_prefix=f"{server.app[SETTINGS].redis_prefix}-split")
    board = await create_board(http, server.base)
    bid = board["id"]
    col = (await create_column(http, server.base, bid))["id"]
    old = await connect()
    await old.join(bid)
    first = await old.cmd(bid, {"op": "card.create", "column_id": col, "title": "before"})
    assert first["type"] == "ack"
    epoch_old = await _epoch(database_url, bid)

    new = await connect(url=other.ws_url)
    joined = await new.join(bid)  # activates the board on the other server: a new epoch
    assert joined["seq"] == first["seq"]
    assert await _epoch(database_url, bid) == epoch_old + 1

    # The older activation still holds the board in memory and builds on it: its commit is
    # refused, every command of it fails with `unavailable`, and nothing of it is stored.
    rids = [
        await old.send_cmd(bid, {"op": "card.create", "column_id": col, "title": f"stale {i}"})
        for i in range(5)
    ]
    answers = await old.wait_answers(rids)
    assert {a["type"] for a in answers.values()} == {"error"}, answers
    assert {a["code"] for a in answers.values()} == {"unavailable"}, answers
    left = await old.expect("left", lambda m: str(m["board_id"]) == bid)
    assert left["reason"] == "board_unavailable"
    stored = await _log(database_url, bid)
    assert not {rid for _, rid in stored} & set(rids)

    # The newer activation commits on.
    later = await new.cmd(bid, {"op": "card.create", "column_id": col, "title": "after"})
    assert later["type"] == "ack" and later["seq"] == first["seq"] + 1

    # Joining again on the first server activates the board there once more, from Postgres:
    # it sees the other server's commit, and now that one is the older activation.
    rejoined = await old.join(bid, since_seq=first["seq"])
    assert rejoined["seq"] == later["seq"]
    assert [e["seq"] for e in rejoined["events"]] == [later["seq"]]
    again = await old.cmd(bid, {"op": "card.create", "column_id": col, "title": "back"})
    assert again["type"] == "ack" and again["seq"] == later["seq"] + 1
    refused = await new.cmd(bid, {"op": "card.create", "column_id": col, "title": "refused"})
    assert (refused["type"], refused["code"]) == ("error", "unavailable")
    assert [seq for seq, _ in await _log(database_url, bid)] == list(range(1, again["seq"] + 1))
