"""Edges of the board actor seen from outside: what a joiner hears about itself, a request id
reused after a restart, a deleted board met by a resuming client, and a run of joins that
shares one access read."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from server.keys import MEMBERS, REGISTRY, REPO
from tests.conftest import create_board, create_column
from tests.test_access_ws import _Held
from tests.wsclient import WsClient

ENCODINGS = ["msgpack", "json"]


async def _answer(client: WsClient, rid: str) -> dict[str, Any]:
    """The reply naming ``rid``, whatever its type (joined, left, ack, error)."""

    def found(log: list[dict[str, Any]]) -> bool:
        return any(m.get("rid") == rid and m["type"] != "pong" for m in log)

    await client.wait_until(found, what=f"the answer to {rid}")
    return next(m for m in client.log if m.get("rid") == rid and m["type"] != "pong")


def _presence_naming(client: WsClient, conn_id: str, start: int) -> list[dict[str, Any]]:
    return [
        m
        for m in client.log[start:]
        if m["type"] == "presence" and any(c["conn_id"] == conn_id for c in m.get("joined", []))
    ]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_joiner_is_not_told_of_itself_and_the_others_are(http, server, connect, encoding):
    bid = (await create_board(http, server.base))["id"]
    a = await connect(encoding)
    await a.join(bid)
    b = await connect(encoding)
    start = len(b.log)
    joined = await b.join(bid)
    me = b.welcome["conn_id"]
    assert me in {c["conn_id"] for v in joined["viewers"] for c in v["connections"]}
    await a.wait_until(lambda _: bool(_presence_naming(a, me, 0)), what="b announced to a")
    await b.ping()  # anything the server sent b after its joined has arrived by now
    assert _presence_naming(b, me, start) == []


async def test_a_run_of_joins_hears_of_each_other_through_its_viewer_lists(http, server, connect):
    """Joins pipelined from many connections land in one mailbox batch: each joiner's list
    holds every viewer of the run, and none of them hears a diff about the run."""
    bid = (await create_board(http, server.base))["id"]
    first = await connect()
    await first.join(bid)
    clients = [await connect() for _ in range(12)]
    starts = [len(c.log) for c in clients]
    rids = [f"j-{i}" for i in range(len(clients))]
    for c, rid in zip(clients, rids, strict=True):
        await c.send({"type": "join", "rid": rid, "board_id": bid})
    for c, rid in zip(clients, rids, strict=True):
        await _answer(c, rid)
    everyone = {c.welcome["conn_id"] for c in [first, *clients]}
    await first.wait_until(
        lambda _: (
            everyone - {first.welcome["conn_id"]}
            <= {x["conn_id"] for m in first.log if m["type"] == "presence" for x in m.get("joined", [])}
        ),
        what="every joiner announced to the first viewer",
    )
    for c, start in zip(clients, starts, strict=True):
        await c.ping()
        joined = next(m for m in c.log[start:] if m["type"] == "joined")
        listed = {x["conn_id"] for v in joined["viewers"] for x in v["connections"]}
        diffs = [m for m in c.log[start:] if m["type"] == "presence"]
        announced = {x["conn_id"] for m in diffs for x in m.get("joined", [])}
        # What it was told, by its list or a later diff, is everyone; never itself twice.
        assert listed | announced == everyone
        assert not listed & announced


async def test_joins_queued_behind_a_busy_board_share_one_access_read(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    col = (await create_column(http, server.base, bid))["id"]
    holder = await connect()
    await holder.join(bid)
    held = _Held(server.app[REPO], "persist")
    await holder.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "holds the board"})
    await asyncio.wait_for(held.entered.wait(), 10)
    members = server.app[MEMBERS]
    reads: list[int] = []
    original = members.access_many

    async def counted(board_id: uuid.UUID, user_ids: Any) -> Any:
        reads.append(len(user_ids))
        return await original(board_id, user_ids)

    checks, all_checked, check = [0], asyncio.Event(), members.access

    async def checked(board_id: uuid.UUID, user_id: uuid.UUID) -> Any:
        answer = await check(board_id, user_id)
        checks[0] += 1
        if checks[0] == 20:
            all_checked.set()
        return answer

    members.access_many = counted  # type: ignore[method-assign]
    members.access = checked  # type: ignore[method-assign]
    try:
        clients = [await connect() for _ in range(20)]
        for i, c in enumerate(clients):
            await c.send({"type": "join", "rid": f"j{i}", "board_id": bid})
        # Every join passes its own check (outside the board) and, in the same step, is put in
        # the board's mailbox, where it waits behind the held commit.
        await asyncio.wait_for(all_checked.wait(), 10)
        # (a presence flush of the holder's join may wait there too)
        assert server.app[REGISTRY].get(uuid.UUID(bid)).mailbox_depth() >= len(clients)
        held.release()
        for i, c in enumerate(clients):
            answer = await _answer(c, f"j{i}")
            assert answer["type"] == "joined", answer
    finally:
        held.release()  # also when the test failed: a held commit would hang the server's stop
        members.access_many = original  # type: ignore[method-assign]
        members.access = check  # type: ignore[method-assign]
    assert sum(reads) >= 1 and len(reads) <= 2, reads  # one read for the run (at most a straggler)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_request_id_reused_for_another_command_is_a_conflict_after_a_restart_too(
    http, server, start_server, connect, encoding
):
    bid = (await create_board(http, server.base))["id"]
    col = (await create_column(http, server.base, bid))["id"]
    c = await connect(encoding)
    await c.join(bid)
    first = await c.cmd(bid, {"op": "card.create", "column_id": col, "title": "one"}, rid="same")
    assert first["type"] == "ack"
    before = await c.cmd(bid, {"op": "card.create", "column_id": col, "title": "two"}, rid="same")
    assert (before["type"], before["code"], before["details"]["seq"]) == ("error", "conflict", first["seq"])

    await c.close()
    await server.stop()
    second = await start_server()
    d = await WsClient.connect(http, second.ws_url, encoding)
    try:
        await d.join(bid)
        after = await d.cmd(bid, {"op": "card.create", "column_id": col, "title": "two"}, rid="same")
        assert (after["type"], after["code"], after["details"]["seq"]) == ("error", "conflict", first["seq"])
        retry = await d.cmd(bid, {"op": "card.create", "column_id": col, "title": "one"}, rid="same")
        assert (retry["type"], retry["seq"], retry.get("duplicate")) == ("ack", first["seq"], True)
    finally:
        await d.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_client_resuming_on_a_deleted_board_is_told_it_was_deleted(http, server, connect, encoding):
    bid = (await create_board(http, server.base))["id"]
    await create_column(http, server.base, bid)
    c = await connect(encoding)
    joined = await c.join(bid)
    last = joined["seq"]
    await c.close()
    async with http.delete(f"{server.base}/api/v1/boards/{bid}") as r:
        assert r.status == 204

    d = await connect(encoding)
    await d.send({"type": "join", "rid": "resume", "board_id": bid, "since_seq": last})
    answer = await _answer(d, "resume")
    assert (answer["type"], answer["reason"]) == ("left", "board_deleted"), answer
    gone = [m for m in d.log if m["type"] == "event" and str(m["board_id"]) == bid]
    assert [(e["seq"], e["event"]["kind"]) for e in gone] == [(last + 1, "board.deleted")]
    # The deletion event comes before the answer to the join.
    assert d.log.index(gone[0]) < d.log.index(answer)

    # A join without since_seq is answered the same way, without the event.
    await d.send({"type": "join", "rid": "plain", "board_id": bid})
    plain = await _answer(d, "plain")
    assert (plain["type"], plain["reason"]) == ("left", "board_deleted")
    # REST tells a former member 410, not 404.
    async with http.get(f"{server.base}/api/v1/boards/{bid}") as r:
        assert r.status == 410
        body = await r.json()
        assert body["error"]["code"] == "gone" and body["error"]["details"]["seq"] == last + 1
    # A board that never existed is still not found.
    await d.send({"type": "join", "rid": "never", "board_id": str(uuid.uuid4()), "since_seq": 0})
    never = await _answer(d, "never")
    assert (never["type"], never["code"]) == ("error", "not_found")


def test_a_pending_presence_diff_is_cut_for_each_run_of_joiners():
    """Between two diffs, the viewers from before get everything, and a joiner only what
    changed after its viewer list was taken (never itself, never what its list showed)."""
    from actors.presence import Presence

    u, w = uuid.uuid4(), uuid.uuid4()
    p = Presence(uuid.uuid4())
    p.add("old", u, "U")
    p.take_diff()
    p.add("x", u, "U")  # a first run of joiners: x's list shows old and x
    at_x = p.version
    p.set_state("old", {"k": 1})
    p.add("y", w, "W")  # a second run: y's list shows old (with its state), x and y
    at_y = p.version
    p.remove("x")
    p.set_state("y", {"k": 2})

    def names(diff):
        parts = ("left", "joined", "updated")
        return {part: sorted(c.conn_id for c in getattr(diff, part)) for part in parts}

    # before: x joined and left unheard of; y is announced with its latest state
    assert names(p.diff()) == {"left": [], "joined": ["y"], "updated": ["old"]}
    assert names(p.diff_since(at_x)) == {"left": ["x"], "joined": ["y"], "updated": ["old"]}
    assert names(p.diff_since(at_y)) == {"left": ["x"], "joined": [], "updated": ["y"]}
    assert p.diff_since(p.version) is None
