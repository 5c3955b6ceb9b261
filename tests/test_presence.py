"""Presence: who is viewing a board, per user with one record per connection, as diffs.

Every connection is the development user for now, so "two viewers" are two tabs of one user:
one viewer record with two connection records.
"""

from __future__ import annotations

import uuid
from typing import Any

from actors.presence import Presence
from server.access import DEV_USER_ID
from server.config import Rate
from tests.conftest import create_board
from tests.wsclient import WsClient

DEV = str(DEV_USER_ID)


def _diffs(client: WsClient, bid: str, start: int = 0) -> list[dict[str, Any]]:
    return [m for m in client.log[start:] if m["type"] == "presence" and str(m["board_id"]) == bid]


def _conns(viewer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """conn_id -> state of one viewer record."""
    return {c["conn_id"]: c.get("state", {}) for c in viewer["connections"]}


def _state_of(diff: dict[str, Any], conn_id: str) -> dict[str, Any] | None:
    """The state a diff gives this connection (joined or updated), None if it does not."""
    for c in diff.get("joined", []) + diff.get("updated", []):
        if c["conn_id"] == conn_id:
            return c.get("state", {})
    return None


def _left(diff: dict[str, Any]) -> set[str]:
    return {c["conn_id"] for c in diff.get("left", [])}


async def _wait_diff(client: WsClient, bid: str, pred, start: int = 0) -> dict[str, Any]:
    await client.wait_until(
        lambda _: any(pred(d) for d in _diffs(client, bid, start)), what="a presence diff"
    )
    return next(d for d in _diffs(client, bid, start) if pred(d))


async def _presence(client: WsClient, bid: str, state: dict[str, Any], rid: str | None = None) -> None:
    msg: dict[str, Any] = {"type": "presence", "board_id": bid, "state": state}
    if rid is not None:
        msg["rid"] = rid
    await client.send(msg)


async def test_two_tabs_of_one_user_are_one_viewer_with_two_connections(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    a = await connect()
    b = await connect("json")
    ja = await a.join(bid)
    assert ja["viewers"] == [
        {
            "user_id": ja["viewers"][0]["user_id"],
            "name": "Developer",
            "connections": [{"conn_id": a.welcome["conn_id"]}],
        }
    ]
    assert str(ja["viewers"][0]["user_id"]) == DEV

    jb = await b.join(bid)
    assert len(jb["viewers"]) == 1
    assert set(_conns(jb["viewers"][0])) == {a.welcome["conn_id"], b.welcome["conn_id"]}
    # a hears of the second tab at once: one joined connection, not a re-send of the viewer.
    diff = await _wait_diff(a, bid, lambda d: _state_of(d, b.welcome["conn_id"]) is not None)
    assert diff["joined"] == [{"user_id": DEV, "conn_id": b.welcome["conn_id"], "name": "Developer"}]
    assert "left" not in diff and "updated" not in diff

    # An explicit leave is a diff retracting that connection.
    mark = len(a.log)
    left = await b.request({"type": "leave", "board_id": bid})
    assert left["type"] == "left" and left["reason"] == "left"
    diff = await _wait_diff(a, bid, lambda d: True, mark)
    assert diff["left"] == [{"user_id": DEV, "conn_id": b.welcome["conn_id"]}]
    assert "joined" not in diff and "updated" not in diff


async def test_a_state_update_reaches_the_other_viewers(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    a = await connect()
    b = await connect("json")
    await a.join(bid)
    await b.join(bid)
    a_id = a.welcome["conn_id"]
    await _presence(a, bid, {"cursor_x": 10, "focus": "card-1", "typing": True, "zoom": 1.5, "sel": None})
    diff = await _wait_diff(b, bid, lambda d: _state_of(d, a_id))
    assert _state_of(diff, a_id) == {
        "cursor_x": 10,
        "focus": "card-1",
        "typing": True,
        "zoom": 1.5,
        "sel": None,
    }
    # Only a's connection is in the diff: b's own record is untouched.
    assert [c["conn_id"] for c in diff["updated"]] == [a_id]
    # A late joiner sees the current state in its joined reply.
    c = await connect()
    jc = await c.join(bid)
    assert _conns(jc["viewers"][0])[a_id]["cursor_x"] == 10
    # An empty map clears it.
    mark = len(b.log)
    await _presence(a, bid, {})
    diff = await _wait_diff(b, bid, lambda d: _state_of(d, a_id) == {}, mark)
    assert [c["conn_id"] for c in diff["updated"]] == [a_id]


async def test_a_burst_of_updates_is_coalesced_and_the_last_state_wins(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    a = await connect()
    b = await connect("json")
    await a.join(bid)
    await b.join(bid)
    a_id = a.welcome["conn_id"]
    mark = len(b.log)
    for i in range(10):
        await _presence(a, bid, {"x": i})
    await _wait_diff(b, bid, lambda d: (_state_of(d, a_id) or {}).get("x") == 9, mark)
    # A sentinel after the burst: every diff about the burst has arrived before its diff.
    await _presence(a, bid, {"x": "end"})
    await _wait_diff(b, bid, lambda d: (_state_of(d, a_id) or {}).get("x") == "end", mark)
    seen = [(_state_of(d, a_id) or {}).get("x") for d in _diffs(b, bid, mark)]
    burst = seen[: seen.index("end")]
    assert burst[-1] == 9, seen
    assert len(burst) <= 3, f"10 updates produced {len(burst)} diffs: not coalesced"
    assert burst == sorted(burst), "an older state arrived after a newer one"
    # a, who sent them, gets the same diffs.
    await _wait_diff(a, bid, lambda d: (_state_of(d, a_id) or {}).get("x") == "end")


async def test_presence_updates_over_the_burst_are_rate_limited(http, start_server, connect):
    srv = await start_server(rate_presence=Rate(3, 3))
    bid = (await create_board(http, srv.base))["id"]
    a = await connect(url=srv.ws_url)
    b = await connect("json", url=srv.ws_url)
    await a.join(bid)
    await b.join(bid)
    a_id = a.welcome["conn_id"]
    for i in range(4):
        await _presence(a, bid, {"n": i}, rid=f"p-{i}")
    await a.ping()
    errors = [m for m in a.log if m["type"] == "error"]
    assert len(errors) == 1, errors
    err = errors[0]
    assert err["code"] == "rate_limited" and err["rid"] == "p-3", err
    assert err["details"]["retry_after_s"] == 1.0
    assert not a.closed.is_set()
    # The refused update was not applied: the last accepted one is the state.
    await _wait_diff(b, bid, lambda d: _state_of(d, a_id) == {"n": 2})
    c = await connect(url=srv.ws_url)
    jc = await c.join(bid)  # queued behind the updates in the board's mailbox
    assert _conns(jc["viewers"][0])[a_id] == {"n": 2}
    # The connection still works for everything else.
    joined_again = await a.join(bid)
    assert joined_again["type"] == "joined"


async def test_disconnecting_clears_the_connection_record(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    a = await connect()
    b = await connect("json")
    await a.join(bid)
    await b.join(bid)
    await _presence(a, bid, {"cursor": 1})
    a_id, b_id = a.welcome["conn_id"], b.welcome["conn_id"]
    await _wait_diff(b, bid, lambda d: _state_of(d, a_id) == {"cursor": 1})
    mark = len(b.log)
    await a.close()
    diff = await _wait_diff(b, bid, lambda d: a_id in _left(d), mark)
    assert diff["left"] == [{"user_id": DEV, "conn_id": a_id}]
    assert b_id not in _left(diff) and "joined" not in diff

    # The user's last connection goes: a later viewer finds nobody else on the board.
    await b.close()
    c = await connect()
    jc = await c.join(bid)
    assert [set(_conns(v)) for v in jc["viewers"]] == [{c.welcome["conn_id"]}]


async def test_rejoining_resets_the_connection_state(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    a = await connect()
    b = await connect("json")
    await a.join(bid)
    await b.join(bid)
    a_id = a.welcome["conn_id"]
    await _presence(a, bid, {"cursor": 1})
    await _wait_diff(b, bid, lambda d: _state_of(d, a_id) == {"cursor": 1})
    mark = len(b.log)
    again = await a.join(bid)
    assert _conns(again["viewers"][0])[a_id] == {}
    diff = await _wait_diff(b, bid, lambda d: True, mark)
    # left, then joined afresh: the client drops the old record and adds an empty one
    assert _left(diff) == {a_id}
    assert _state_of(diff, a_id) == {}


def test_diffs_are_per_connection_and_a_users_last_connection_ends_their_viewing():
    """With one user per connection for now, two users are checked on the presence model
    itself: the second one's only connection goes, so they are no longer a viewer."""
    board = uuid.uuid4()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    p = Presence(board)
    p.add("a1", alice, "Alice")
    p.add("a2", alice, "Alice")
    p.add("b1", bob, "Bob")
    first = p.take_diff()
    assert first is not None and not first.left and not first.updated
    assert sorted((c.conn_id, c.name) for c in first.joined) == [
        ("a1", "Alice"),
        ("a2", "Alice"),
        ("b1", "Bob"),
    ]
    assert p.take_diff() is None  # nothing changed since
    p.remove("b1")
    p.remove("a2")
    diff = p.take_diff()
    assert diff is not None and not diff.joined and not diff.updated
    assert sorted((c.user_id == bob, c.conn_id) for c in diff.left) == [(False, "a2"), (True, "b1")]
    assert [(v.user_id, [c.conn_id for c in v.connections]) for v in p.viewers()] == [(alice, ["a1"])]
    p.set_state("a1", {"x": 1})
    p.set_state("a1", {"x": 2})  # coalesced: the last state wins
    p.set_state("gone", {"x": 3})  # a connection that left: ignored
    diff = p.take_diff()
    assert diff is not None and not diff.left and not diff.joined
    assert [(c.conn_id, c.state, c.name) for c in diff.updated] == [("a1", {"x": 2}, None)]
    # A connection that joins and leaves between two diffs was never announced: no diff.
    p.add("c1", bob, "Bob")
    p.remove("c1")
    assert p.take_diff() is None
