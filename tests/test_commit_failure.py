"""A group commit that Postgres rejects for one command's data: the board retries the batch
in halves until only that command is refused; nobody is told it succeeded, nothing of it is
visible anywhere, every other command is acknowledged, and the board carries on from what is
really stored.

A CHECK constraint on the test database's ``cards`` table rejects the title 'boom' (what the
validation does not catch); the command creating it is pipelined among others so that they
share its group commit. Batch boundaries are not deterministic, so the test asserts the
invariants, not batch membership.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.boardmodel import BoardModel, db_events, db_state, normalise_snapshot, rest_snapshot
from tests.conftest import create_board, create_column

CONSTRAINT = f"test_no_boom_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def no_boom(database_url: str, server) -> AsyncIterator[None]:
    # After `server`, so the migrations have created the table.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"ALTER TABLE cards ADD CONSTRAINT {CONSTRAINT} CHECK (title <> 'boom')")
        yield
    finally:
        await conn.execute(f"ALTER TABLE cards DROP CONSTRAINT IF EXISTS {CONSTRAINT}")
        await conn.close()


@pytest.mark.parametrize("presence_mid_burst", [False, True], ids=["commands", "with-presence"])
async def test_one_bad_command_fails_alone_and_its_group_commit_is_acked(
    http, server, start_server, connect, database_url, no_boom, presence_mid_burst
):
    """With ``presence_mid_burst`` a presence update sits between the commands: the actor
    must commit what precedes it first, and after the failure carry on with what follows."""
    board = await create_board(http, server.base, "Commit failure")
    bid = board["id"]
    col = (await create_column(http, server.base, bid))["id"]
    a = await connect()
    viewer = await connect("json")
    joined = (await a.join(bid))["snapshot"]
    await viewer.join(bid)
    base = joined["seq"]

    titles = [f"t{i}" for i in range(12)]
    titles[6] = "boom"
    rids = []
    for i, t in enumerate(titles):
        if presence_mid_burst and i == 7:
            await a.send({"type": "presence", "board_id": bid, "state": {"mid": "burst"}})
        rids.append(await a.send_cmd(bid, {"op": "card.create", "column_id": col, "title": t}))
    title_of = dict(zip(rids, titles, strict=True))
    boom = rids[6]
    if not presence_mid_burst:
        # Queued behind the commands on the same connection: must see only committed state.
        # (Not with the presence update: re-joining resets it before it is broadcast.)
        await a.send({"type": "join", "rid": "rejoin", "board_id": bid, "since_seq": base})
    await a.wait_answers(rids)
    # Every rid has exactly one answer.
    for rid in rids:
        assert len(a.answers(rid)) == 1, a.answers(rid)
    answer = {rid: a.answers(rid)[0] for rid in rids}
    acked = {rid for rid in rids if answer[rid]["type"] == "ack"}
    failed = set(rids) - acked
    assert failed == {boom}, [answer[r] for r in failed]
    assert answer[boom]["code"] == "bad_request", answer[boom]
    assert str(answer[boom]["board_id"]) == bid

    if not presence_mid_burst:
        await a.wait_until(lambda log: any(m.get("rid") == "rejoin" for m in log), what="rejoin")
        rejoined = next(m for m in a.log if m.get("rid") == "rejoin")
        assert rejoined["type"] == "joined", rejoined
        assert rejoined["seq"] == base + len(acked)
        assert {e["rid"] for e in rejoined["events"]} == acked

    if presence_mid_burst:
        a_id = a.welcome["conn_id"]

        def has_mid(log: list) -> bool:
            return any(
                c.get("state") == {"mid": "burst"}
                for m in log
                if m["type"] == "presence"
                for c in m.get("joined", []) + m.get("updated", [])
                if c["conn_id"] == a_id
            )

        await viewer.wait_until(has_mid, what="the presence update")

    # Subsequent commands work: the actor reloaded from Postgres.
    after = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "after"})
    assert after["type"] == "ack", after
    final = base + len(acked) + 1
    assert after["seq"] == final, "the failed batch consumed seqs"
    # Acked seqs are the gap-free run after the base.
    assert sorted(answer[r]["seq"] for r in acked) == list(range(base + 1, final))

    # acked <=> broadcast <=> stored, for every rid; no event ever for a failed one.
    for client in (a, viewer):
        evs = await client.wait_seq(bid, final)
        assert [e["seq"] for e in evs] == list(range(base + 1, final + 1))
        broadcast = {e.get("rid"): e for e in evs}
        assert set(broadcast) - {after["rid"]} == acked
        for rid in acked:
            assert broadcast[rid]["seq"] == answer[rid]["seq"]
            assert broadcast[rid]["event"]["card"]["title"] == title_of[rid]
    stored = await db_events(database_url, bid)
    assert [r["seq"] for r in stored] == list(range(1, final + 1))
    assert {r["request_id"] for r in stored} & set(rids) == acked
    db = await db_state(database_url, bid)
    assert sorted(c[2] for c in db["cards"]) == sorted([title_of[r] for r in acked] + ["after"])
    assert "boom" not in [c[2] for c in db["cards"]]

    # The clients' boards equal the server's and Postgres'.
    model = BoardModel(joined).apply_all(viewer.events(bid)).normalised()
    assert model == normalise_snapshot(await rest_snapshot(http, server.base, bid)) == db

    # The failed commands were not applied, so retrying them (same rid) applies them now,
    # except 'boom', which still cannot be saved.
    retry = [r for r in rids if r in failed and r != boom]
    for rid in retry:
        again = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": title_of[rid]}, rid=rid)
        assert again["type"] == "ack" and not again.get("duplicate"), again
    again = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "boom"}, rid=boom)
    assert again["type"] == "error" and again["code"] == "bad_request"
    final += len(retry)
    await viewer.wait_seq(bid, final)
    model = BoardModel(joined).apply_all(viewer.events(bid)).normalised()
    assert model["seq"] == final

    # After a restart the board is what the clients saw.
    await server.stop()
    second = await start_server()
    assert normalise_snapshot(await rest_snapshot(http, second.base, bid)) == model
    assert await db_state(database_url, bid) == model
