"""History against a real server: the activity feed, time travel and card histories, checked
against what real WebSocket and REST clients saw during a random run of commands."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import typing
import uuid
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from actors.replay import RULES, ReplayState
from protocol import commands as c
from protocol.base import RankChange
from protocol.model import BoardSnapshot, Card, Column
from tests.conftest import create_board
from tests.test_rest import API, assert_error, call

EVERY = 37  # snapshot interval in these tests: many snapshots in a few hundred events


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, history_snapshot_every=EVERY)


def test_every_event_type_has_a_replay_rule():
    events = set(typing.get_args(c.Event))
    assert events, "protocol.commands.Event is not a union"
    missing = sorted(t.__name__ for t in events - set(RULES))
    assert not missing, f"event types without a replay rule in actors/replay.py: {missing}"
    assert set(RULES) <= events, "rules for types that are not events"


def test_replay_refuses_a_gap_and_an_unknown_item():
    st = ReplayState.origin(uuid.uuid4(), "B", "")
    col = Column(id=uuid.uuid4(), title="A", rank=5)
    with pytest.raises(Exception, match="seq"):
        st.apply(2, c.ColumnCreated(column=col))
    st.apply(1, c.ColumnCreated(column=col))
    with pytest.raises(Exception, match="not on the board"):
        st.apply(2, c.CardUpdated(card_id=uuid.uuid4(), title="x"))
    assert st.seq == 1


def test_replay_applies_partial_updates_and_rebalanced_ranks_exactly():
    st = ReplayState.origin(uuid.uuid4(), "B", "d")
    col = Column(id=uuid.uuid4(), title="A", rank=10)
    a = Card(id=uuid.uuid4(), column_id=col.id, title="a", description="keep", rank=1)
    b = Card(id=uuid.uuid4(), column_id=col.id, title="b", rank=2)
    st.apply_all(
        [
            (1, c.ColumnCreated(column=col)),
            (2, c.CardCreated(card=a)),
            (3, c.CardCreated(card=b, rebalanced=[RankChange(a.id, 7)])),
            (4, c.CardUpdated(card_id=a.id, title="a2")),
            (5, c.CardMoved(card_id=b.id, column_id=col.id, rank=3, rebalanced=[RankChange(a.id, 9)])),
            (6, c.BoardUpdated(description="new")),
        ]
    )
    snap = st.snapshot()
    assert (snap.title, snap.description, snap.seq) == ("B", "new", 6)
    assert [(x.title, x.description, x.rank) for x in snap.cards] == [("b", "", 3), ("a2", "keep", 9)]


def test_replay_of_a_notice_changes_nothing():
    st = ReplayState.origin(uuid.uuid4(), "B", "")
    st.apply(1, c.ColumnCreated(column=Column(id=uuid.uuid4(), title="A", rank=5)))
    before = st.snapshot()
    touched = st.apply(
        2,
        c.WebhookDisabled(webhook_id=uuid.uuid4(), host="hooks.example.com", reason="HTTP 500", failures=25),
    )
    assert touched == set() and st.seq == 2
    assert msgspec.structs.replace(st.snapshot(), seq=1) == before


# ------------------------------------------------------------------ a random run


def _pick(rng: random.Random, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return rng.choice(items) if items else None


DEV = "00000000-0000-4000-8000-000000000001"


def _place(rng: random.Random, op: dict[str, Any], siblings: list[dict[str, Any]]) -> dict[str, Any]:
    ref = _pick(rng, siblings[:2])  # crowding the head of a list forces rebalances
    if ref and rng.random() < 0.7:
        op[rng.choice(["after", "before"])] = ref["id"]
    return op


def _random_op(rng: random.Random, snap: dict[str, Any], n: int) -> dict[str, Any]:
    """A random command of the whole board model against the board as it is now."""
    cols, cards = snap["columns"], snap["cards"]
    labels, fields = snap.get("labels", []), snap.get("fields", [])
    checklists, items, comments = snap.get("checklists", []), snap.get("items", []), snap.get("comments", [])
    if not cols:
        return {"op": "column.create", "title": f"col {n}"}
    col, card = rng.choice(cols), _pick(rng, cards)
    archived = [x for x in cards if x.get("archived")]
    if archived and rng.random() < 0.15:
        card = rng.choice(archived)  # so that restores happen too
    with_files = [x for x in cards if any(a["card_id"] == x["id"] for a in snap.get("attachments", []))]
    if with_files and rng.random() < 0.3:
        card = rng.choice(with_files)  # so that covers and deletions of attachments happen too
    choices: list[dict[str, Any]] = [
        {"op": "board.update", "title": f"board {n}"},
        {"op": "board.update", "description": f"about {n}"},
        {"op": "board.configure", "allow_wip_overflow": rng.random() < 0.5},
        _place(rng, {"op": "column.create", "title": f"col {n}"}, cols),
        {"op": "column.update", "column_id": col["id"], "title": f"renamed {n}"},
        _place(rng, {"op": "column.move", "column_id": col["id"]}, [x for x in cols if x["id"] != col["id"]]),
        {"op": "column.configure", "column_id": col["id"], "colour": rng.choice(["green", "#12ab34", None])},
        {"op": "column.configure", "column_id": col["id"], "wip_limit": rng.choice([3, 50, None])},
        {"op": "column.restore" if col.get("archived") else "column.archive", "column_id": col["id"]},
        {"op": "label.create", "name": f"label {n}", "colour": rng.choice(["red", "blue", "#aabbcc"])},
        {
            "op": "field.create",
            "name": f"field {n}",
            "kind": rng.choice(["text", "number", "date", "checkbox"]),
        },
        {
            "op": "field.create",
            "name": f"select {n}",
            "kind": "select",
            "options": [{"name": "a"}, {"name": "b"}],
        },
    ]
    if len(cols) > 2:
        choices.append({"op": "column.delete", "column_id": col["id"], "cards": "delete"})
        other = rng.choice([c for c in cols if c["id"] != col["id"]])
        choices.append(
            {"op": "column.delete", "column_id": col["id"], "cards": "move", "move_to": other["id"]}
        )
    in_col = [x for x in cards if x["column_id"] == col["id"]]
    for _ in range(6):  # cards are the common case
        op = {"op": "card.create", "column_id": col["id"], "title": f"card {n}"}
        if rng.random() < 0.3:
            op["description"] = f"text {n}"
        choices.append(_place(rng, op, in_col))
    if labels:
        lb = rng.choice(labels)
        choices += [
            {"op": "label.update", "label_id": lb["id"], "name": f"relabel {n}"},
            {"op": "label.update", "label_id": lb["id"], "colour": "purple"},
            {"op": "label.delete", "label_id": lb["id"]},
        ]
    if fields:
        f = rng.choice(fields)
        choices += [{"op": "field.update", "field_id": f["id"], "name": f"refield {n}"}]
        if f["kind"] == "select":
            choices.append({"op": "field.add_option", "field_id": f["id"], "name": f"opt {n}"})
            if f["options"]:
                choices.append(
                    {"op": "field.remove_option", "field_id": f["id"], "option_id": f["options"][0]["id"]}
                )
        if rng.random() < 0.1:
            choices.append({"op": "field.delete", "field_id": f["id"]})
    if card:
        cid = card["id"]
        target = rng.choice(cols)
        choices += [
            {"op": "card.update", "card_id": cid, "title": f"t{n}"},
            {"op": "card.update", "card_id": cid, "description": f"d{n}"},
            _place(
                rng,
                {"op": "card.move", "card_id": cid, "column_id": target["id"]},
                [x for x in cards if x["column_id"] == target["id"] and x["id"] != cid],
            ),
            _place(
                rng,
                {"op": "card.move", "card_id": cid, "column_id": target["id"]},
                [x for x in cards if x["column_id"] == target["id"] and x["id"] != cid],
            ),
            {"op": "card.delete", "card_id": cid},
            {
                "op": "card.schedule",
                "card_id": cid,
                "due_ms": 1_700_000_000_000 + n,
                "done": rng.random() < 0.5,
            },
            {"op": "card.schedule", "card_id": cid, "start_ms": None},
            {"op": rng.choice(["card.assign", "card.unassign"]), "card_id": cid, "user_id": DEV},
            {"op": "card.restore" if card.get("archived") else "card.archive", "card_id": cid},
            _place(
                rng,
                {"op": "checklist.create", "card_id": cid, "title": f"list {n}"},
                [x for x in checklists if x["card_id"] == cid],
            ),
            {"op": "comment.create", "card_id": cid, "body": f"hello @Developer {n}"},
            {"op": "_upload", "card_id": cid},  # REST: the blob store's upload route
        ]
        mine = [a for a in snap.get("attachments", []) if a["card_id"] == cid]
        if mine:
            att = rng.choice(mine)
            choices += [
                {"op": "card.set_cover", "card_id": cid, "attachment_id": rng.choice([att["id"], None])},
                {"op": "_unattach", "card_id": cid, "attachment_id": att["id"]},
            ]
        if labels:
            lb = rng.choice(labels)
            choices.append(
                {
                    "op": rng.choice(["card.add_label", "card.remove_label"]),
                    "card_id": cid,
                    "label_id": lb["id"],
                }
            )
        if fields:
            f = rng.choice(fields)
            value: Any = {
                "text": f"v{n}",
                "number": n + 0.5,
                "date": 1_700_000_000_000.0,
                "checkbox": True,
            }.get(f["kind"])
            if f["kind"] == "select":
                value = f["options"][0]["id"] if f["options"] else None
            choices.append({"op": "card.set_field", "card_id": cid, "field_id": f["id"], "value": value})
    if checklists:
        cl = rng.choice(checklists)
        others = [x for x in checklists if x["card_id"] == cl["card_id"] and x["id"] != cl["id"]]
        in_cl = [x for x in items if x["checklist_id"] == cl["id"]]
        choices += [
            {"op": "checklist.rename", "checklist_id": cl["id"], "title": f"relist {n}"},
            _place(rng, {"op": "checklist.move", "checklist_id": cl["id"]}, others),
            _place(rng, {"op": "item.create", "checklist_id": cl["id"], "text": f"item {n}"}, in_cl),
            _place(
                rng, {"op": "item.create", "checklist_id": cl["id"], "text": f"item {n}", "due_ms": 5}, in_cl
            ),
        ]
        if rng.random() < 0.3:
            choices.append({"op": "checklist.delete", "checklist_id": cl["id"]})
    if items:
        it = rng.choice(items)
        cl = rng.choice(checklists)
        choices += [
            {"op": "item.update", "item_id": it["id"], "done": not it["done"]},
            {"op": "item.update", "item_id": it["id"], "text": f"retext {n}", "assignee_id": DEV},
            _place(
                rng,
                {"op": "item.move", "item_id": it["id"], "checklist_id": cl["id"]},
                [x for x in items if x["checklist_id"] == cl["id"] and x["id"] != it["id"]],
            ),
            {"op": "item.delete", "item_id": it["id"]},
        ]
    if comments:
        cm = rng.choice(comments)
        choices += [
            {"op": "comment.edit", "comment_id": cm["id"], "body": f"edited {n}"},
            {"op": "comment.delete", "comment_id": cm["id"]},
        ]
    return rng.choice(choices)


async def _attachment_op(http, server, bid: str, op: dict[str, Any], n: int) -> dict[str, Any]:
    """An upload or an attachment deletion over REST, answered like a WebSocket command."""
    url = f"{server.base}{API}/{bid}/cards/{op['card_id']}/attachments"
    if op["op"] == "_upload":
        form = aiohttp.FormData()
        form.add_field("file", f"notes {n}\n".encode(), filename=f"notes-{n}.txt", content_type="text/plain")
        r = await call(http, "POST", url, data=form)
        ok = r.status == 201
    else:
        r = await call(http, "DELETE", f"{url}/{op['attachment_id']}")
        ok = r.status == 204
    if not ok:
        return {"type": "error", "code": r.body["error"]["code"], "message": r.body["error"]["message"]}
    seq = (await call(http, "GET", f"{server.base}{API}/{bid}")).body["seq"]
    return {"type": "ack", "seq": seq}


async def _random_run(http, server, connect, steps: int, seed: int):
    """Returns the board id, what clients saw at each seq (REST snapshots after every ack, and
    the snapshots of fresh WebSocket joins) and the observer's events."""
    rng = random.Random(seed)
    board = await create_board(http, server.base, "History")
    bid = board["id"]
    observer = await connect("json")
    joined = await observer.join(bid)
    seen: dict[int, dict[str, Any]] = {0: joined["snapshot"]}
    writer = await connect("msgpack")
    await writer.join(bid)
    snap = joined["snapshot"]
    refused: list[str] = []
    for n in range(steps):
        op = _random_op(rng, snap, n)
        crowd = next((x for x in reversed(snap["columns"]) if x["title"] == "crowd column"), None)
        in_crowd = [x for x in snap["cards"] if crowd and x["column_id"] == crowd["id"]]
        start = steps // 3
        if n == start:
            op = {"op": "column.create", "title": "crowd column"}
        elif crowd and start < n <= start + 2:
            op = {"op": "card.create", "column_id": crowd["id"], "title": f"crowd {n}"}
        elif crowd and len(in_crowd) >= 2 and start + 2 < n <= start + 42:
            # Always right after the column's first card: the gap halves until a rebalance.
            op = {
                "op": "card.create",
                "column_id": crowd["id"],
                "title": f"crowd {n}",
                "after": in_crowd[0]["id"],
            }
        if op["op"] in ("_upload", "_unattach"):
            ack = await _attachment_op(http, server, bid, op, n)
        else:
            ack = await writer.cmd(bid, op)
        if ack["type"] == "error":
            # A refusal the board model makes (WIP limit, archived...) changes nothing.
            assert ack["code"] in ("bad_request", "conflict", "not_found"), (op, ack)
            refused.append(f"{op} -> {ack['message']}")
            continue
        assert ack["type"] == "ack", ack
        got = await call(http, "GET", f"{server.base}{API}/{bid}")
        snap = got.body
        assert snap["seq"] == ack["seq"]
        seen[snap["seq"]] = snap
        if n % 25 == 0:  # a newcomer's join snapshot is also what a client saw
            fresh = await connect(rng.choice(["json", "msgpack"]))
            j = await fresh.join(bid)
            assert j["snapshot"] == msgspec.json.decode(msgspec.json.encode(j["snapshot"]))
            fresh_snap = msgspec.json.decode(msgspec.json.encode(j["snapshot"]))
            assert fresh_snap["seq"] == snap["seq"] and fresh_snap == snap
            await fresh.close()
    events = await observer.wait_seq(bid, snap["seq"])
    assert len(refused) < steps / 4, refused
    assert not [r for r in refused if "could not be saved" in r or "internal" in r], refused
    return bid, seen, events


def _canon(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot decoded into the protocol type and back: msgpack and JSON alike."""
    s = msgspec.convert(snap, BoardSnapshot)
    return msgspec.json.decode(msgspec.json.encode(s))


async def test_time_travel_equals_what_clients_saw_at_every_seq(http, server, connect, database_url):
    kinds: set[str] = set()
    for seed in (7, 3):
        kinds |= await _time_travel_run(http, server, connect, database_url, seed)
    missing = (
        {t.__struct_config__.tag for t in typing.get_args(c.Event)}
        - kinds
        - {
            "board.deleted",  # the board's log ends with the board
            "webhook.disabled",  # needs a failing webhook: test_replay_of_a_notice_changes_nothing
        }
    )
    assert not missing, f"the random runs never produced {sorted(missing)}"


async def _time_travel_run(http, server, connect, database_url, seed: int) -> set[str]:
    """One random run; time travel checked at every seq. Returns the event kinds it made."""
    bid, seen, events = await _random_run(http, server, connect, steps=600, seed=seed)
    last = max(seen)
    assert last > 200
    rebalanced = [e for e in events if e["event"].get("rebalanced")]
    assert rebalanced, "the run should have forced at least one rebalance"
    # Several passes: the first builds snapshots, later ones replay from them.
    for _ in range(2):
        for seq in sorted(seen):
            got = await call(http, "GET", f"{server.base}{API}/{bid}", params={"at_seq": str(seq)})
            assert got.status == 200, got.body
            if got.body != _canon(seen[seq]):
                ev = [e for e in events if e["seq"] in (seq - 1, seq)]
                want = _canon(seen[seq])
                diff = {k: (got.body[k], want[k]) for k in got.body if got.body[k] != want[k]}
                raise AssertionError(f"time travel differs at seq {seq}: {ev} {diff}")
    conn = await asyncpg.connect(database_url)
    try:
        stored = [
            r["seq"]
            for r in await conn.fetch(
                "SELECT seq FROM board_snapshots WHERE board_id = $1 ORDER BY seq", uuid.UUID(bid)
            )
        ]
        assert stored == [0, *range(EVERY, last + 1, EVERY)]
        # Without any snapshot but the origin, replay from the start gives the same boards.
        await conn.execute("DELETE FROM board_snapshots WHERE board_id = $1 AND seq > 0", uuid.UUID(bid))
    finally:
        await conn.close()
    for seq in random.Random(1).sample(sorted(seen), 30):
        got = await call(http, "GET", f"{server.base}{API}/{bid}", params={"at_seq": str(seq)})
        assert got.body == _canon(seen[seq]), seq

    # The activity feed is the events the observer saw, newest first, page by page.
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "40"} | ({"cursor": cursor} if cursor else {})
        page = await call(http, "GET", f"{server.base}{API}/{bid}/activity", params=params)
        assert page.status == 200, page.body
        items += page.body["items"]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert [i["seq"] for i in items] == list(range(last, 0, -1))
    assert [i["event"] for i in reversed(items)] == [e["event"] for e in events]
    assert all(i["author"]["name"] == "Developer" and i["summary"] for i in items)
    assert all(i["at"].endswith("Z") or i["at"].endswith("+00:00") for i in items)
    return {e["event"]["kind"] for e in events}


async def test_card_history_is_the_card_after_each_event_that_changed_it(http, server, connect):
    bid, seen, _ = await _random_run(http, server, connect, steps=120, seed=11)
    by_card: dict[str, list[tuple[int, dict[str, Any] | None]]] = {}
    prev: dict[str, dict[str, Any]] = {}
    for seq in sorted(seen):
        now = {x["id"]: x for x in seen[seq]["cards"]}
        for card_id in set(now) | set(prev):
            if now.get(card_id) != prev.get(card_id):
                by_card.setdefault(card_id, []).append((seq, now.get(card_id)))
        prev = now
    assert len(by_card) > 10
    for card_id, expected in by_card.items():
        got = await call(
            http, "GET", f"{server.base}{API}/{bid}/cards/{card_id}/history", params={"limit": "200"}
        )
        assert got.status == 200, got.body
        steps = [(s["seq"], s["card"]) for s in got.body["steps"]]
        # Every change of the card is a step; a step may also be an event that touched the card
        # and left it as it was (a card moved to where it already was).
        changes = [st for i, st in enumerate(steps) if i == 0 or st[1] != steps[i - 1][1]]
        assert changes == expected, card_id
        assert [s for s, _ in steps] == sorted({s for s, _ in steps})
        feed = await call(http, "GET", f"{server.base}{API}/{bid}/cards/{card_id}/activity")
        assert [i["seq"] for i in feed.body["items"]] == [s for s, _ in reversed(steps)][:50]


async def test_time_travel_by_time_and_its_refusals(http, server):
    base = server.base
    bid = (await create_board(http, base, "Clock"))["id"]
    url = f"{base}{API}/{bid}"
    col = (await call(http, "POST", f"{url}/columns", json={"title": "A"})).body
    await asyncio.sleep(0.05)
    middle = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.05)
    await call(http, "POST", f"{url}/cards", json={"column_id": col["id"], "title": "later"})
    got = await call(http, "GET", url, params={"at": middle.isoformat()})
    assert got.status == 200, got.body
    assert (
        got.body["seq"] == 1
        and got.body["cards"] == []
        and [x["title"] for x in got.body["columns"]] == ["A"]
    )
    now = await call(
        http, "GET", url, params={"at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")}
    )
    assert now.body["seq"] == 2
    err = assert_error(await call(http, "GET", url, params={"at_seq": "3"}), 404, "not_found")
    assert err["details"] == {"at_seq": 3, "seq": 2}
    for bad in (
        {"at_seq": "-1"},
        {"at_seq": "x"},
        {"at_seq": "1", "at": middle.isoformat()},
        {"at": "yesterday"},
        {"at": "2026-01-01T00:00:00"},
    ):
        assert_error(await call(http, "GET", url, params=bad), 400, "bad_request")
    assert_error(await call(http, "GET", url, params={"at": "2000-01-01T00:00:00Z"}), 404, "not_found")
    assert_error(await call(http, "GET", f"{url}/activity", params={"limit": "0"}), 400, "bad_request")
    assert_error(await call(http, "GET", f"{url}/activity", params={"limit": "201"}), 400, "bad_request")
    assert_error(await call(http, "GET", f"{url}/activity", params={"order": "up"}), 400, "bad_request")
    assert_error(await call(http, "GET", f"{url}/cards/{uuid.uuid4()}/history"), 404, "not_found")
    # Reading history changed nothing.
    assert (await call(http, "GET", url)).body["seq"] == 2


async def test_history_is_readable_by_every_role_and_by_nobody_else(http, start_server):
    from tests import roles

    srv = await start_server(auth="jwt")
    people = await roles.accounts(http, srv.base, *roles.ROLES, "stranger")
    bid = await roles.board_with_roles(
        http,
        srv.base,
        people,
        **{r: r for r in roles.ROLES if r not in ("owner", "admin", "member", "viewer")},
    )
    url = roles.board_url(srv.base, bid)
    col = await roles.call(http, "POST", f"{url}/columns", people["member"], json={"title": "A"})
    card = await roles.call(
        http, "POST", f"{url}/cards", people["member"], json={"column_id": col.body["id"], "title": "x"}
    )
    paths = [
        "/activity",
        f"/cards/{card.body['id']}/activity",
        f"/cards/{card.body['id']}/history",
        "?at_seq=1",
    ]
    for role in roles.ROLES:
        for path in paths:
            r = await roles.call(http, "GET", url + path, people[role])
            assert r.status == 200, (role, path, r.body)
    feed = await roles.call(http, "GET", f"{url}/activity", people["viewer"])
    assert [i["author"]["name"] for i in feed.body["items"]] == ["member", "member"]
    assert feed.body["items"][0]["summary"] == "added card “x”"
    for path in paths:
        roles.assert_error(await roles.call(http, "GET", url + path, people["stranger"]), 404, "not_found")
        roles.assert_unauthorized(await roles.call(http, "GET", url + path))


async def test_column_delete_moving_cards_keeps_what_hangs_off_them(http, server, connect, database_url):
    """Found by the random time-travel run: after a reload the board differed from what
    clients saw, because PostgreSQL lost the moved cards' checklists and comments (fixed by
    migration 0009)."""
    bid = (await create_board(http, server.base))["id"]
    ws = await connect()
    await ws.join(bid)
    a = (await call(http, "POST", f"{server.base}{API}/{bid}/columns", json={"title": "A"})).body
    b = (await call(http, "POST", f"{server.base}{API}/{bid}/columns", json={"title": "B"})).body
    card = (
        await call(http, "POST", f"{server.base}{API}/{bid}/cards", json={"column_id": a["id"], "title": "x"})
    ).body
    await ws.cmd(bid, {"op": "checklist.create", "card_id": card["id"], "title": "L"})
    await ws.cmd(bid, {"op": "comment.create", "card_id": card["id"], "body": "hi"})
    ack = await ws.cmd(
        bid, {"op": "column.delete", "column_id": a["id"], "cards": "move", "move_to": b["id"]}
    )
    assert ack["type"] == "ack", ack
    conn = await asyncpg.connect(database_url)
    try:
        stored = [
            await conn.fetchval(f"SELECT count(*) FROM {t} WHERE board_id = $1", uuid.UUID(bid))
            for t in ("cards", "checklists", "comments")
        ]
    finally:
        await conn.close()
    assert stored == [1, 1, 1]
