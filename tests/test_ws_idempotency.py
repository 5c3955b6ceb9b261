"""A retried command (same rid, same user, same board) is applied once: over one connection,
from a new connection, after a restart, within one group commit, and over REST."""

from __future__ import annotations

from tests.boardmodel import db_events, rest_snapshot
from tests.conftest import create_board, create_column
from tests.wsclient import WsClient, new_rid


async def _setup(http, base: str, connect, url: str | None = None) -> tuple[str, str, WsClient]:
    board = await create_board(http, base, "Idempotency")
    col = await create_column(http, base, board["id"])
    viewer = await connect("json", url=url)
    await viewer.join(board["id"])
    return board["id"], col["id"], viewer


async def _settle(writer: WsClient, viewers: list[WsClient], bid: str) -> int:
    """A fresh marker command: once every viewer has its event, they have every earlier one."""
    ack = await writer.cmd(bid, {"op": "board.update", "description": new_rid()})
    assert ack["type"] == "ack", ack
    for v in viewers:
        await v.wait_seq(bid, ack["seq"])
    return int(ack["seq"])


def _events_for(client: WsClient, bid: str, rid: str) -> list[dict]:
    return [e for e in client.events(bid) if e.get("rid") == rid]


def _titles(snapshot: dict) -> list[str]:
    return [c["title"] for c in snapshot["cards"]]


async def test_retry_on_the_same_connection_is_applied_once(http, server, connect, database_url):
    bid, col, viewer = await _setup(http, server.base, connect)
    a = await connect()
    await a.join(bid)
    op = {"op": "card.create", "column_id": col, "title": "once"}
    first = await a.cmd(bid, op, rid="retry-1")
    second = await a.cmd(bid, op, rid="retry-1")
    assert first == {"type": "ack", "rid": "retry-1", "board_id": bid, "seq": 2}
    assert second == {**first, "duplicate": True}

    marker = await _settle(a, [a, viewer], bid)
    assert marker == 3, "the duplicate consumed a seq"
    for client in (a, viewer):
        assert len(_events_for(client, bid, "retry-1")) == 1
        assert [e["seq"] for e in client.events(bid)] == [2, 3]
    assert _titles(await rest_snapshot(http, server.base, bid)) == ["once"]
    log = await db_events(database_url, bid)
    assert [r["seq"] for r in log] == [1, 2, 3]
    assert [r["request_id"] for r in log].count("retry-1") == 1


async def test_retry_from_a_new_connection_of_the_same_user_is_applied_once(http, server, connect):
    bid, col, viewer = await _setup(http, server.base, connect)
    a = await connect()
    await a.join(bid)
    op = {"op": "card.create", "column_id": col, "title": "once"}
    # The first attempt is sent and the connection dropped before the client could count
    # on the ack; the client retries from a new connection with the same rid.
    first = await a.cmd(bid, op, rid="retry-2")
    await a.close()
    b = await connect("json")
    await b.join(bid)
    again = await b.cmd(bid, op, rid="retry-2")
    assert again == {**first, "duplicate": True}
    await _settle(b, [b, viewer], bid)
    assert len(_events_for(viewer, bid, "retry-2")) == 1
    assert _events_for(b, bid, "retry-2") == [], "the duplicate was broadcast again"
    assert _titles(await rest_snapshot(http, server.base, bid)) == ["once"]


async def test_retry_after_a_restart_is_applied_once(http, start_server, connect):
    first_srv = await start_server()
    bid, col, _ = await _setup(http, first_srv.base, connect, first_srv.ws_url)
    a = await connect(url=first_srv.ws_url)
    await a.join(bid)
    op = {"op": "card.create", "column_id": col, "title": "once"}
    first = await a.cmd(bid, op, rid="retry-3")
    await first_srv.stop()

    second_srv = await start_server()
    b = await connect(url=second_srv.ws_url)
    await b.join(bid)
    again = await b.cmd(bid, op, rid="retry-3")
    assert again == {**first, "duplicate": True}
    assert _titles(await rest_snapshot(http, second_srv.base, bid)) == ["once"]


async def test_retries_in_one_pipelined_burst_are_applied_once(http, server, connect, database_url):
    bid, col, viewer = await _setup(http, server.base, connect)
    a = await connect()
    await a.join(bid)
    op = {"op": "card.create", "column_id": col, "title": "once"}
    # Back to back, no await on answers in between: they land in the same mailbox drain.
    before = await a.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "before"})
    for _ in range(3):
        await a.send_cmd(bid, op, rid="burst-1")
    after = await a.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "after"})
    await a.wait_answers([before, after])
    await a.wait_until(lambda _: len(a.answers("burst-1")) == 3, what="three answers")
    answers = a.answers("burst-1")
    assert [m["type"] for m in answers] == ["ack"] * 3
    assert len({m["seq"] for m in answers}) == 1
    assert sorted(m.get("duplicate", False) for m in answers) == [False, True, True]
    seqs = [a.answers(before)[0]["seq"], answers[0]["seq"], a.answers(after)[0]["seq"]]
    assert seqs == [2, 3, 4], "duplicates consumed seqs"

    await _settle(a, [a, viewer], bid)
    for client in (a, viewer):
        assert len(_events_for(client, bid, "burst-1")) == 1
        assert [e["seq"] for e in client.events(bid)] == [2, 3, 4, 5]
    assert _titles(await rest_snapshot(http, server.base, bid)) == ["before", "once", "after"]
    rids = [r["request_id"] for r in await db_events(database_url, bid)]
    assert rids.count("burst-1") == 1


async def test_rest_idempotency_key_is_applied_once(http, server, connect):
    bid, col, viewer = await _setup(http, server.base, connect)
    url = f"{server.base}/api/v1/boards/{bid}/cards"
    body = {"column_id": col, "title": "once"}
    headers = {"Idempotency-Key": "rest-1"}
    async with http.post(url, json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    async with http.post(url, json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        retried = await r.json()
    assert retried == created

    # The REST key and a WebSocket rid share one key space (same user, same board).
    a = await connect()
    await a.join(bid)
    ws_retry = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "once"}, rid="rest-1")
    assert ws_retry["duplicate"] is True and ws_retry["seq"] == 2

    await _settle(a, [viewer], bid)
    assert len(_events_for(viewer, bid, "rest-1")) == 1
    snap = await rest_snapshot(http, server.base, bid)
    assert [c["id"] for c in snap["cards"]] == [created["id"]]


async def test_an_idempotency_key_is_per_board(http, server, connect):
    """The same rid on another board is a different command."""
    bid1, col1, _ = await _setup(http, server.base, connect)
    bid2, col2, _ = await _setup(http, server.base, connect)
    a = await connect()
    await a.join(bid1)
    await a.join(bid2)
    one = await a.cmd(bid1, {"op": "card.create", "column_id": col1, "title": "x"}, rid="shared")
    two = await a.cmd(bid2, {"op": "card.create", "column_id": col2, "title": "x"}, rid="shared")
    assert not one.get("duplicate") and not two.get("duplicate")
    assert len((await rest_snapshot(http, server.base, bid2))["cards"]) == 1


async def test_a_rid_reused_for_another_command_is_a_conflict(http, server, connect):
    bid, col, viewer = await _setup(http, server.base, connect)
    a = await connect()
    await a.join(bid)
    first = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "one"}, rid="reused")
    other = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "two"}, rid="reused")
    assert other["type"] == "error" and other["code"] == "conflict", other
    assert other["rid"] == "reused" and other["details"] == {"seq": first["seq"]}
    await _settle(a, [viewer], bid)
    assert len(_events_for(viewer, bid, "reused")) == 1
    assert _titles(await rest_snapshot(http, server.base, bid)) == ["one"]


async def test_a_rest_create_retried_after_a_restart_answers_the_card_it_made(http, start_server, connect):
    """The retry reaches a new activation that no longer holds the original event in memory
    (a restart, or a failover to another node): it is answered with the card it created, read
    from the event log, not refused as a conflict."""
    first_srv = await start_server()
    bid, col, _ = await _setup(http, first_srv.base, connect, first_srv.ws_url)
    body = {"column_id": col, "title": "once"}
    headers = {"Idempotency-Key": "rest-after-restart"}
    async with http.post(f"{first_srv.base}/api/v1/boards/{bid}/cards", json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    await first_srv.stop()

    second_srv = await start_server()
    async with http.post(f"{second_srv.base}/api/v1/boards/{bid}/cards", json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        retried = await r.json()
    assert retried == created
    assert _titles(await rest_snapshot(http, second_srv.base, bid)) == ["once"]
