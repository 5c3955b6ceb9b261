"""Resume after a dropped connection: exactly the missed events, from memory or from the
event log, or a snapshot when the gap is too old; and a restart loses nothing."""

from __future__ import annotations

from typing import Any

from tests.boardmodel import BoardModel, normalise_snapshot, rest_snapshot
from tests.conftest import create_board, create_column
from tests.wsclient import WsClient


async def _board_with_column(http, base: str) -> tuple[str, str]:
    board = await create_board(http, base, "Resume")
    col = await create_column(http, base, board["id"])
    return board["id"], col["id"]


async def _make_changes(writer: WsClient, bid: str, col: str, k: int) -> list[dict[str, Any]]:
    """K acknowledged changes (pipelined), returned as the events the writer saw live."""
    rids = [
        await writer.send_cmd(bid, {"op": "card.create", "column_id": col, "title": f"card {i}"})
        for i in range(k)
    ]
    answers = await writer.wait_answers(rids)
    assert all(a["type"] == "ack" for a in answers.values()), answers
    last = max(a["seq"] for a in answers.values())
    evs = await writer.wait_seq(bid, last)
    mine = [e for e in evs if e.get("rid") in set(rids)]
    assert len(mine) == k
    return mine


async def _assert_nothing_else(client: WsClient, bid: str) -> None:
    """After the joined reply: no stray events (a ping round trip flushes the queue)."""
    await client.ping()
    assert client.events(bid) == [], "events arrived outside the joined reply"


async def _drop_and_resume(http, start_server, connect, **server_settings: Any) -> None:
    srv = await start_server(**server_settings)
    bid, col = await _board_with_column(http, srv.base)
    a = await connect("msgpack", url=srv.ws_url)
    joined = await a.join(bid)
    since = joined["seq"]
    model = BoardModel(joined["snapshot"])
    await a.close()

    writer = await connect("json", url=srv.ws_url)
    await writer.join(bid)
    live = await _make_changes(writer, bid, col, 5)

    again = await connect("msgpack", url=srv.ws_url)
    resumed = await again.join(bid, since_seq=since)
    assert resumed["type"] == "joined", resumed
    assert "snapshot" not in resumed
    assert resumed["seq"] == since + 5
    assert [e["seq"] for e in resumed["events"]] == list(range(since + 1, since + 6))
    # The same events the live viewer got: same kind, body, author, rid and timestamp.
    assert resumed["events"] == live
    await _assert_nothing_else(again, bid)
    model.apply_all(resumed["events"])
    assert model.normalised() == normalise_snapshot(await rest_snapshot(http, srv.base, bid))


async def test_resume_from_the_in_memory_buffer(http, start_server, connect):
    await _drop_and_resume(http, start_server, connect)


async def test_resume_from_the_event_log_when_the_buffer_is_too_short(http, start_server, connect):
    # Two events fit in memory; five were missed, so they must come from Postgres.
    await _drop_and_resume(http, start_server, connect, recent_events=2)


async def test_resume_from_the_event_log_after_a_restart(http, start_server, connect):
    first = await start_server()
    bid, col = await _board_with_column(http, first.base)
    a = await connect("msgpack", url=first.ws_url)
    since = (await a.join(bid))["seq"]
    live = await _make_changes(a, bid, col, 4)
    await first.stop()
    await a.closed.wait()

    second = await start_server()  # a fresh process: nothing in memory
    b = await connect("json", url=second.ws_url)
    resumed = await b.join(bid, since_seq=since)
    assert "snapshot" not in resumed and resumed["seq"] == since + 4
    assert resumed["events"] == live
    await _assert_nothing_else(b, bid)


async def test_resume_at_the_current_seq_gets_no_events(http, server, connect):
    bid, col = await _board_with_column(http, server.base)
    a = await connect()
    seq = (await a.join(bid))["seq"]
    b = await connect("json")
    resumed = await b.join(bid, since_seq=seq)
    assert resumed["events"] == [] and resumed["seq"] == seq and "snapshot" not in resumed
    await _assert_nothing_else(b, bid)
    # And live events continue right after.
    await _make_changes(a, bid, col, 1)
    evs = await b.wait_seq(bid, seq + 1)
    assert [e["seq"] for e in evs] == [seq + 1]


async def test_too_old_a_gap_gets_a_snapshot(http, start_server, connect):
    srv = await start_server(max_resume_events=3)
    bid, col = await _board_with_column(http, srv.base)
    a = await connect(url=srv.ws_url)
    since = (await a.join(bid))["seq"]

    await _make_changes(a, bid, col, 3)  # exactly at the limit: still events
    b = await connect("json", url=srv.ws_url)
    at_limit = await b.join(bid, since_seq=since)
    assert [e["seq"] for e in at_limit["events"]] == [since + 1, since + 2, since + 3]
    assert "snapshot" not in at_limit

    await _make_changes(a, bid, col, 1)  # now 4 behind: a snapshot instead
    c = await connect(url=srv.ws_url)
    too_old = await c.join(bid, since_seq=since)
    assert too_old["type"] == "joined"
    assert "events" not in too_old
    assert too_old["seq"] == since + 4 == too_old["snapshot"]["seq"]
    assert normalise_snapshot(too_old["snapshot"]) == normalise_snapshot(
        await rest_snapshot(http, srv.base, bid)
    )
    assert len(too_old["snapshot"]["cards"]) == 4
    await _assert_nothing_else(c, bid)


async def test_since_seq_ahead_of_the_board_is_refused(http, server, connect):
    bid, col = await _board_with_column(http, server.base)
    a = await connect("json")
    err = await a.join(bid, since_seq=99)
    assert err["type"] == "error" and err["code"] == "bad_request", err
    assert str(err["board_id"]) == bid
    assert err["details"] == {"seq": 1, "since_seq": 99}
    # The connection is not joined: commands are refused, and it sees no events.
    refused = await a.cmd(bid, {"op": "column.create", "title": "X"})
    assert refused["type"] == "error" and refused["code"] == "not_joined"
    other = await connect()
    await other.join(bid)
    await _make_changes(other, bid, col, 1)
    await a.ping()
    assert a.events(bid) == []
    # It can still join properly.
    joined = await a.join(bid)
    assert joined["seq"] == 2 and "snapshot" in joined


async def test_a_restart_preserves_the_board(http, start_server, connect):
    first = await start_server()
    bid, col = await _board_with_column(http, first.base)
    a = await connect(url=first.ws_url)
    await a.join(bid)
    done = await a.cmd(bid, {"op": "column.create", "title": "Done"})
    assert done["type"] == "ack"
    done_id = str(a.events(bid)[-1]["event"]["column"]["id"])
    await _make_changes(a, bid, col, 5)
    cards = [str(e["event"]["card"]["id"]) for e in a.events(bid) if e["event"]["kind"] == "card.created"]
    for op in (
        {"op": "card.move", "card_id": cards[0], "column_id": done_id},
        {"op": "card.move", "card_id": cards[4], "column_id": col, "before": cards[1]},
        {"op": "card.update", "card_id": cards[2], "title": "renamed", "description": "desc"},
        {"op": "card.delete", "card_id": cards[3]},
        {"op": "column.move", "column_id": done_id, "before": col},
        {"op": "board.update", "title": "Resumed", "description": "after a restart"},
    ):
        ack = await a.cmd(bid, op)
        assert ack["type"] == "ack", (op, ack)
    before_rest = await rest_snapshot(http, first.base, bid)
    before_ws = (await (await connect("json", url=first.ws_url)).join(bid))["snapshot"]
    assert before_ws == before_rest
    assert before_rest["seq"] == 13

    await first.stop()
    second = await start_server()
    after_rest = await rest_snapshot(http, second.base, bid)
    after_ws = (await (await connect(url=second.ws_url)).join(bid))["snapshot"]
    assert after_rest == before_rest
    assert normalise_snapshot(after_ws) == normalise_snapshot(before_rest)
    # And the board keeps counting from where it was.
    b = await connect(url=second.ws_url)
    await b.join(bid)
    ack = await b.cmd(bid, {"op": "card.create", "column_id": col, "title": "after restart"})
    assert ack["seq"] == 14
