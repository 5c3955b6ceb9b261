"""REST CRUD for boards, columns and cards against a real server, its error bodies, and how
REST changes reach WebSocket viewers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import create_board, create_column

API = "/api/v1/boards"


class Reply:
    def __init__(self, status: int, headers: Any, body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Reply:
    async with http.request(method, url, **kw) as r:
        raw = await r.read()
        body: Any = None
        if raw:
            assert r.content_type == "application/json", (r.status, raw[:200])
            body = await r.json()
        return Reply(r.status, r.headers, body)


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """The error body is exactly {"error": {code, message, request_id, details?}} and the
    request id is the one in the X-Request-Id header."""
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, reply.body
    err = reply.body["error"]
    assert set(err) in ({"code", "message", "request_id"}, {"code", "message", "request_id", "details"}), err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert "details" not in err or isinstance(err["details"], dict)
    rid = reply.headers.get("X-Request-Id")
    assert rid and err["request_id"] == rid
    return err


async def card(http: aiohttp.ClientSession, base: str, board_id: str, column_id: str, title: str, **kw: Any):
    r = await call(
        http, "POST", f"{base}{API}/{board_id}/cards", json={"column_id": column_id, "title": title, **kw}
    )
    assert r.status == 201, r.body
    return r.body


async def card_titles(http: aiohttp.ClientSession, base: str, board_id: str, column_id: str) -> list[str]:
    r = await call(http, "GET", f"{base}{API}/{board_id}/cards", params={"column_id": column_id})
    assert r.status == 200, r.body
    return [c["title"] for c in r.body["cards"]]


async def column_titles(http: aiohttp.ClientSession, base: str, board_id: str) -> list[str]:
    r = await call(http, "GET", f"{base}{API}/{board_id}/columns")
    assert r.status == 200, r.body
    ranks = [c["rank"] for c in r.body["columns"]]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    return [c["title"] for c in r.body["columns"]]


# ------------------------------------------------------------------ boards


async def test_board_crud(http, server):
    base = server.base
    created = await call(http, "POST", f"{base}{API}", json={"title": "Roadmap", "description": "Q3"})
    assert created.status == 201
    board = created.body
    assert board == {
        "id": board["id"],
        "title": "Roadmap",
        "description": "Q3",
        "seq": 0,
        "role": "owner",
        "visibility": "private",
    }
    assert created.headers.get("X-Request-Id")

    listed = await call(http, "GET", f"{base}{API}")
    assert listed.status == 200
    assert board in listed.body["boards"]

    got = await call(http, "GET", f"{base}{API}/{board['id']}")
    assert got.status == 200
    assert got.body == {
        "id": board["id"],
        "title": "Roadmap",
        "description": "Q3",
        "seq": 0,
        "columns": [],
        "cards": [],
        "allow_wip_overflow": False,
        "labels": [],
        "fields": [],
        "checklists": [],
        "items": [],
        "comments": [],
        "attachments": [],
    }

    patched = await call(http, "PATCH", f"{base}{API}/{board['id']}", json={"title": "Roadmap 2"})
    assert patched.status == 200
    assert patched.body["title"] == "Roadmap 2" and patched.body["description"] == "Q3"
    assert patched.body["seq"] == 1
    patched = await call(http, "PATCH", f"{base}{API}/{board['id']}", json={"description": ""})
    assert patched.status == 200 and patched.body["description"] == "" and patched.body["seq"] == 2

    got = await call(http, "GET", f"{base}{API}/{board['id']}")
    assert (got.body["title"], got.body["description"], got.body["seq"]) == ("Roadmap 2", "", 2)

    deleted = await call(http, "DELETE", f"{base}{API}/{board['id']}")
    assert deleted.status == 204 and deleted.body is None
    # Its former member (the owner) is told it was deleted, not that it never existed.
    assert_error(await call(http, "GET", f"{base}{API}/{board['id']}"), 410, "gone")
    listed = await call(http, "GET", f"{base}{API}")
    assert board["id"] not in [b["id"] for b in listed.body["boards"]]
    assert_error(await call(http, "DELETE", f"{base}{API}/{board['id']}"), 410, "gone")


async def test_patch_board_with_nothing_to_change_is_400_and_changes_nothing(http, server):
    board = await create_board(http, server.base)
    url = f"{server.base}{API}/{board['id']}"
    assert_error(await call(http, "PATCH", url, json={}), 400, "bad_request")
    got = await call(http, "GET", url)
    assert got.body["seq"] == 0 and got.body["title"] == board["title"]


# ------------------------------------------------------------------ columns


async def test_column_crud_and_moves(http, server):
    base = server.base
    board = await create_board(http, base)
    bid = board["id"]
    a = await create_column(http, base, bid, "A")
    assert set(a) == {"id", "title", "rank", "colour", "wip_limit", "archived"} and a["title"] == "A"
    c = await create_column(http, base, bid, "C")
    r = await call(http, "POST", f"{base}{API}/{bid}/columns", json={"title": "B", "after": a["id"]})
    assert r.status == 201
    b = r.body
    r = await call(http, "POST", f"{base}{API}/{bid}/columns", json={"title": "Z", "before": a["id"]})
    assert r.status == 201
    z = r.body
    assert await column_titles(http, base, bid) == ["Z", "A", "B", "C"]

    got = await call(http, "GET", f"{base}{API}/{bid}/columns/{b['id']}")
    assert got.status == 200 and got.body == b

    renamed = await call(http, "PATCH", f"{base}{API}/{bid}/columns/{b['id']}", json={"title": "Bee"})
    assert renamed.status == 200 and renamed.body == {**b, "title": "Bee"}

    move = f"{base}{API}/{bid}/columns/{z['id']}/move"
    moved = await call(http, "POST", move, json={})  # to the end
    assert moved.status == 200 and moved.body["id"] == z["id"]
    assert await column_titles(http, base, bid) == ["A", "Bee", "C", "Z"]
    moved = await call(http, "POST", move, json={"after": a["id"]})
    assert moved.status == 200
    assert await column_titles(http, base, bid) == ["A", "Z", "Bee", "C"]
    moved = await call(http, "POST", move, json={"before": a["id"]})
    assert moved.status == 200
    assert await column_titles(http, base, bid) == ["Z", "A", "Bee", "C"]
    moved = await call(http, "POST", f"{base}{API}/{bid}/columns/{a['id']}/move", json={"after": c["id"]})
    assert moved.status == 200
    assert await column_titles(http, base, bid) == ["Z", "Bee", "C", "A"]

    deleted = await call(http, "DELETE", f"{base}{API}/{bid}/columns/{c['id']}")
    assert deleted.status == 204 and deleted.body is None
    assert await column_titles(http, base, bid) == ["Z", "Bee", "A"]
    assert_error(await call(http, "GET", f"{base}{API}/{bid}/columns/{c['id']}"), 404, "not_found")


async def test_column_placement_errors_change_nothing(http, server):
    base = server.base
    bid = (await create_board(http, base))["id"]
    a = await create_column(http, base, bid, "A")
    b = await create_column(http, base, bid, "B")
    seq = (await call(http, "GET", f"{base}{API}/{bid}")).body["seq"]
    move = f"{base}{API}/{bid}/columns/{a['id']}/move"

    assert_error(
        await call(http, "POST", move, json={"after": b["id"], "before": b["id"]}), 400, "bad_request"
    )
    assert_error(await call(http, "POST", move, json={"after": a["id"]}), 400, "bad_request")
    err = assert_error(await call(http, "POST", move, json={"after": str(uuid.uuid4())}), 404, "not_found")
    assert "column" in err["details"]
    assert_error(
        await call(
            http, "POST", f"{base}{API}/{bid}/columns", json={"title": "X", "before": str(uuid.uuid4())}
        ),
        404,
        "not_found",
    )
    assert await column_titles(http, base, bid) == ["A", "B"]
    assert (await call(http, "GET", f"{base}{API}/{bid}")).body["seq"] == seq


async def test_deleting_a_column_with_cards_deletes_them_only_when_asked(http, server, database_url):
    base = server.base
    bid = (await create_board(http, base))["id"]
    doomed = await create_column(http, base, bid, "Doomed")
    kept = await create_column(http, base, bid, "Kept")
    gone = [await card(http, base, bid, doomed["id"], f"g{i}") for i in range(3)]
    stays = await card(http, base, bid, kept["id"], "stays")

    url = f"{base}{API}/{bid}/columns/{doomed['id']}"
    refused = await call(http, "DELETE", url)
    assert_error(refused, 409, "conflict")
    assert refused.body["error"]["details"] == {"reason": "column_not_empty", "cards": 3}
    assert len((await call(http, "GET", f"{base}{API}/{bid}/cards")).body["cards"]) == 4
    assert (await call(http, "DELETE", f"{url}?cards=delete")).status == 204
    cards = (await call(http, "GET", f"{base}{API}/{bid}/cards")).body["cards"]
    assert cards == [stays]
    for c in gone:
        assert_error(await call(http, "GET", f"{base}{API}/{bid}/cards/{c['id']}"), 404, "not_found")

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id FROM cards WHERE board_id = $1", uuid.UUID(bid))
        assert {str(r["id"]) for r in rows} == {stays["id"]}
        cols = await conn.fetch("SELECT id FROM columns WHERE board_id = $1", uuid.UUID(bid))
        assert {str(r["id"]) for r in cols} == {kept["id"]}
    finally:
        await conn.close()


# ------------------------------------------------------------------ cards


async def test_card_crud(http, server):
    base = server.base
    bid = (await create_board(http, base))["id"]
    col = await create_column(http, base, bid)
    created = await call(
        http,
        "POST",
        f"{base}{API}/{bid}/cards",
        json={"column_id": col["id"], "title": "T", "description": "d"},
    )
    assert created.status == 201
    c = created.body
    assert c == {
        "id": c["id"],
        "column_id": col["id"],
        "title": "T",
        "description": "d",
        "rank": c["rank"],
        "start_ms": None,
        "due_ms": None,
        "done": False,
        "assignees": [],
        "label_ids": [],
        "cover_id": None,
        "archived": False,
        "fields": {},
    }
    assert 0 < c["rank"] < 2**53  # JSON.parse reads it exactly

    url = f"{base}{API}/{bid}/cards/{c['id']}"
    assert (await call(http, "GET", url)).body == c
    patched = await call(http, "PATCH", url, json={"title": "T2"})
    assert patched.status == 200 and patched.body == {**c, "title": "T2"}
    patched = await call(http, "PATCH", url, json={"description": "longer"})
    assert patched.status == 200 and patched.body == {**c, "title": "T2", "description": "longer"}
    assert_error(await call(http, "PATCH", url, json={}), 400, "bad_request")
    assert (await call(http, "GET", url)).body == patched.body

    listed = await call(http, "GET", f"{base}{API}/{bid}/cards")
    assert listed.status == 200 and listed.body == {"cards": [patched.body]}

    assert (await call(http, "DELETE", url)).status == 204
    assert_error(await call(http, "GET", url), 404, "not_found")
    assert_error(await call(http, "DELETE", url), 404, "not_found")
    assert_error(await call(http, "PATCH", url, json={"title": "x"}), 404, "not_found")
    assert (await call(http, "GET", f"{base}{API}/{bid}/cards")).body == {"cards": []}


async def test_card_placement_and_moves(http, server):
    base = server.base
    bid = (await create_board(http, base))["id"]
    left = await create_column(http, base, bid, "Left")
    right = await create_column(http, base, bid, "Right")
    a = await card(http, base, bid, left["id"], "a")
    c = await card(http, base, bid, left["id"], "c")
    await card(http, base, bid, left["id"], "b", after=a["id"])
    zero = await card(http, base, bid, left["id"], "0", before=a["id"])
    assert await card_titles(http, base, bid, left["id"]) == ["0", "a", "b", "c"]
    x = await card(http, base, bid, right["id"], "x")

    def move(card_id: str, **body: Any):
        return call(http, "POST", f"{base}{API}/{bid}/cards/{card_id}/move", json=body)

    # to another column, at the end
    r = await move(a["id"], column_id=right["id"])
    assert r.status == 200 and r.body["column_id"] == right["id"] and r.body["title"] == "a"
    assert await card_titles(http, base, bid, left["id"]) == ["0", "b", "c"]
    assert await card_titles(http, base, bid, right["id"]) == ["x", "a"]
    # to another column, before a neighbour
    r = await move(c["id"], column_id=right["id"], before=x["id"])
    assert r.status == 200
    assert await card_titles(http, base, bid, right["id"]) == ["c", "x", "a"]
    # back, after a neighbour
    r = await move(x["id"], column_id=left["id"], after=zero["id"])
    assert r.status == 200 and r.body["column_id"] == left["id"]
    assert await card_titles(http, base, bid, left["id"]) == ["0", "x", "b"]
    # within a column, to the end
    r = await move(x["id"], column_id=left["id"])
    assert r.status == 200
    assert await card_titles(http, base, bid, left["id"]) == ["0", "b", "x"]

    # the whole board's cards come column by column, each in rank order
    snap = (await call(http, "GET", f"{base}{API}/{bid}")).body
    assert [(k["column_id"], k["title"]) for k in snap["cards"]] == [
        (left["id"], "0"),
        (left["id"], "b"),
        (left["id"], "x"),
        (right["id"], "c"),
        (right["id"], "a"),
    ]


async def test_card_errors_change_nothing(http, server):
    base = server.base
    bid = (await create_board(http, base))["id"]
    left = await create_column(http, base, bid, "Left")
    right = await create_column(http, base, bid, "Right")
    a = await card(http, base, bid, left["id"], "a")
    b = await card(http, base, bid, right["id"], "b")
    before = (await call(http, "GET", f"{base}{API}/{bid}")).body
    move = f"{base}{API}/{bid}/cards/{a['id']}/move"
    nobody = str(uuid.uuid4())

    # neighbour in another column than the target
    assert_error(
        await call(http, "POST", move, json={"column_id": left["id"], "after": b["id"]}), 400, "bad_request"
    )
    assert_error(
        await call(http, "POST", move, json={"column_id": left["id"], "after": a["id"]}), 400, "bad_request"
    )
    assert_error(
        await call(http, "POST", move, json={"column_id": right["id"], "after": b["id"], "before": b["id"]}),
        400,
        "bad_request",
    )
    err = assert_error(await call(http, "POST", move, json={"column_id": nobody}), 404, "not_found")
    assert err["details"] == {"column": nobody}
    assert_error(
        await call(http, "POST", move, json={"column_id": right["id"], "before": nobody}), 404, "not_found"
    )
    err = assert_error(
        await call(http, "POST", f"{base}{API}/{bid}/cards", json={"column_id": nobody, "title": "t"}),
        404,
        "not_found",
    )
    assert err["details"] == {"column": nobody}
    assert_error(
        await call(http, "GET", f"{base}{API}/{bid}/cards", params={"column_id": "nope"}), 400, "bad_request"
    )
    assert (await call(http, "GET", f"{base}{API}/{bid}")).body == before


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("", "POST", b"{not json"),
        ("", "POST", b""),
        ("", "POST", b"[1, 2]"),
        ("", "POST", b'{"title": 5}'),
        ("", "POST", b'{"title": ""}'),
        ("", "POST", b'{"title": "' + b"x" * 201 + b'"}'),
        ("", "POST", b'{"title": "t", "colour": "red"}'),
        ("", "POST", b'{"description": "no title"}'),
        ("/{board}", "PATCH", b'{"title": null, "owner": "me"}'),
        ("/{board}", "PATCH", b'{"description": 3}'),
        ("/{board}/columns", "POST", b'{"title": "t", "after": "not-a-uuid"}'),
        ("/{board}/columns", "POST", b"\xff\xfe"),
        ("/{board}/columns/{column}", "PATCH", b"{}"),
        ("/{board}/columns/{column}/move", "POST", b'{"after": 7}'),
        ("/{board}/cards", "POST", b'{"title": "t"}'),
        ("/{board}/cards", "POST", b'{"column_id": "{column}", "title": "t", "rank": 1}'),
        ("/{board}/cards/{card}", "PATCH", b'{"title": ["t"]}'),
        ("/{board}/cards/{card}/move", "POST", b'{"after": "{card}"}'),
    ],
)
async def test_malformed_or_invalid_bodies_are_400_and_change_nothing(http, server, path, method, body):
    base = server.base
    bid = (await create_board(http, base))["id"]
    col = await create_column(http, base, bid)
    c = await card(http, base, bid, col["id"], "c")
    before = (await call(http, "GET", f"{base}{API}/{bid}")).body

    def fill(s: str) -> str:
        return s.replace("{board}", bid).replace("{column}", col["id"]).replace("{card}", c["id"])

    data = fill(body.decode("latin-1")).encode("latin-1")
    reply = await call(
        http, method, f"{base}{API}{fill(path)}", data=data, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400, "bad_request")
    assert (await call(http, "GET", f"{base}{API}/{bid}")).body == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/{x}"),
        ("PATCH", "/{x}"),
        ("DELETE", "/{x}"),
        ("GET", "/{x}/columns"),
        ("GET", "/{x}/cards"),
        ("GET", "/{board}/columns/{x}"),
        ("PATCH", "/{board}/columns/{x}"),
        ("DELETE", "/{board}/columns/{x}"),
        ("POST", "/{board}/columns/{x}/move"),
        ("GET", "/{board}/cards/{x}"),
        ("PATCH", "/{board}/cards/{x}"),
        ("DELETE", "/{board}/cards/{x}"),
        ("POST", "/{board}/cards/{x}/move"),
    ],
)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "random-uuid"])
async def test_unknown_or_non_uuid_ids_are_404(http, server, method, path, bad_id):
    base = server.base
    bid = (await create_board(http, base))["id"]
    col = await create_column(http, base, bid)
    x = str(uuid.uuid4()) if bad_id == "random-uuid" else bad_id
    body: dict[str, Any] | None = None
    if method == "PATCH":
        body = {"title": "t"}
    elif path.endswith("/move"):
        body = {"column_id": col["id"]} if "/cards/" in path else {}
    url = f"{base}{API}{path.replace('{board}', bid).replace('{x}', x)}"
    err = assert_error(await call(http, method, url, json=body), 404, "not_found")
    assert x in err["details"].values()


async def test_body_over_max_body_bytes_is_413_with_json_error(http, start_server):
    srv = await start_server(max_body_bytes=1024)
    ok = await call(http, "POST", f"{srv.base}{API}", json={"title": "t", "description": "x" * 900})
    assert ok.status == 201
    reply = await call(http, "POST", f"{srv.base}{API}", json={"title": "t", "description": "x" * 2000})
    assert_error(reply, 413, "too_large")
    bid = ok.body["id"]
    reply = await call(
        http, "POST", f"{srv.base}{API}/{bid}/columns", json={"title": "t", "after": None, "pad": "y" * 5000}
    )
    assert_error(reply, 413, "too_large")
    assert (await call(http, "GET", f"{srv.base}{API}/{bid}")).body["seq"] == 0


async def test_unknown_route_and_wrong_method_are_json_errors(http, server):
    assert_error(await call(http, "GET", f"{server.base}/nope"), 404, "not_found")
    assert_error(await call(http, "GET", f"{server.base}/api/v1/boards/x/y/z"), 404, "not_found")
    reply = await call(http, "PUT", f"{server.base}{API}")
    assert reply.status == 405
    assert_error(reply, 405, reply.body["error"]["code"])


async def test_request_id_is_echoed_when_safe_and_replaced_when_not(http, server):
    r = await call(http, "GET", f"{server.base}/nope", headers={"X-Request-Id": "trace-123.abc"})
    assert r.headers["X-Request-Id"] == "trace-123.abc"
    assert r.body["error"]["request_id"] == "trace-123.abc"
    r = await call(http, "GET", f"{server.base}{API}", headers={"X-Request-Id": "trace-7"})
    assert r.status == 200 and r.headers["X-Request-Id"] == "trace-7"
    r = await call(http, "GET", f"{server.base}/nope", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.headers["X-Request-Id"] != "bad id\twith spaces"
    assert_error(r, 404, "not_found")
    a = await call(http, "GET", f"{server.base}/nope")
    b = await call(http, "GET", f"{server.base}/nope")
    assert a.headers["X-Request-Id"] != b.headers["X-Request-Id"]


async def test_idempotency_key_replays_a_create_without_applying_it_twice(http, server):
    base = server.base
    bid = (await create_board(http, base))["id"]
    headers = {"Idempotency-Key": "create-todo-1"}
    url = f"{base}{API}/{bid}/columns"
    first = await call(http, "POST", url, json={"title": "Todo"}, headers=headers)
    again = await call(http, "POST", url, json={"title": "Todo"}, headers=headers)
    assert first.status == 201, first.body
    assert again.status in (200, 201), again.body
    assert again.body["id"] == first.body["id"]
    assert await column_titles(http, base, bid) == ["Todo"]
    assert (await call(http, "GET", f"{base}{API}/{bid}")).body["seq"] == 1

    # the same key for a different command is a conflict, and nothing is applied
    err = assert_error(
        await call(http, "POST", url, json={"title": "Other"}, headers=headers), 409, "conflict"
    )
    assert err["details"]["seq"] == 1
    assert_error(
        await call(http, "PATCH", f"{base}{API}/{bid}", json={"title": "New"}, headers=headers),
        409,
        "conflict",
    )
    assert_error(await call(http, "DELETE", f"{url}/{first.body['id']}", headers=headers), 409, "conflict")
    snap = (await call(http, "GET", f"{base}{API}/{bid}")).body
    assert snap["seq"] == 1 and [c["title"] for c in snap["columns"]] == ["Todo"]
    assert_error(
        await call(http, "POST", url, json={"title": "t"}, headers={"Idempotency-Key": "k" * 65}),
        400,
        "bad_request",
    )


# ------------------------------------------------------------------ REST meets WebSocket


async def test_rest_and_ws_mutations_reach_a_viewer_in_seq_order(http, server, connect):
    base = server.base
    bid = (await create_board(http, base))["id"]
    viewer = await connect("json")
    writer = await connect("msgpack")
    assert (await viewer.join(bid))["seq"] == 0
    await writer.join(bid)

    col = await create_column(http, base, bid, "Todo")  # seq 1, REST
    ack = await writer.cmd(bid, {"op": "card.create", "column_id": col["id"], "title": "ws"})  # seq 2
    assert ack["type"] == "ack" and ack["seq"] == 2
    rest_card = await card(http, base, bid, col["id"], "rest")  # seq 3
    r = await call(http, "PATCH", f"{base}{API}/{bid}", json={"title": "Renamed"})  # seq 4
    assert r.body["seq"] == 4
    # A burst of REST and WebSocket commands at once: whatever order the board picks, every
    # viewer sees it gap-free.
    ws_rids = [f"burst-{i}" for i in range(10)]

    async def ws_burst() -> None:
        for rid in ws_rids:
            op = {"op": "card.update", "card_id": rest_card["id"], "title": rid}
            await writer.send({"type": "cmd", "rid": rid, "board_id": bid, "op": op})

    replies = await asyncio.gather(
        ws_burst(),
        *(
            call(http, "PATCH", f"{base}{API}/{bid}/cards/{rest_card['id']}", json={"description": f"d{i}"})
            for i in range(10)
        ),
    )
    assert [r.status for r in replies[1:]] == [200] * 10
    evs = await viewer.wait_seq(bid, 24)
    assert [e["seq"] for e in evs] == list(range(1, 25))
    kinds = [e["event"]["kind"] for e in evs]
    assert kinds[:4] == ["column.created", "card.created", "card.created", "board.updated"]
    assert sorted(kinds[4:]) == ["card.updated"] * 20
    assert evs[1]["rid"] == ack["rid"] and evs[2].get("rid") is None
    assert {e["rid"] for e in evs[4:] if e.get("rid")} == set(ws_rids)
    # the writer sees exactly the same sequence, and an ack for each of its commands
    assert [e["seq"] for e in await writer.wait_seq(bid, 24)] == list(range(1, 25))
    acks = {m["rid"]: m["seq"] for m in writer.log if m["type"] == "ack"}
    by_rid = {e["rid"]: e["seq"] for e in evs if e.get("rid")}
    assert all(acks[rid] == by_rid[rid] for rid in ws_rids)
    # and the REST view of the board agrees with the last event
    final = (await call(http, "GET", f"{base}{API}/{bid}")).body
    assert final["seq"] == 24
    last_desc = [e["event"]["description"] for e in evs if e["event"].get("description")][-1]
    assert final["cards"][1]["description"] == last_desc


async def test_deleting_a_board_tells_viewers_and_removes_it_everywhere(http, server, connect, database_url):
    base = server.base
    bid = (await create_board(http, base))["id"]
    col = await create_column(http, base, bid)
    await card(http, base, bid, col["id"], "c")
    viewers = [await connect("msgpack"), await connect("json")]
    for v in viewers:
        await v.join(bid)

    assert (await call(http, "DELETE", f"{base}{API}/{bid}")).status == 204
    for v in viewers:
        ev = (await v.wait_seq(bid, 3))[-1]
        assert ev["seq"] == 3 and ev["event"] == {"kind": "board.deleted"}
        left = await v.expect("left", lambda m: str(m["board_id"]) == bid)
        assert left["reason"] == "board_deleted"
        assert v.log.index(left) > v.log.index(ev)
        # the board is gone for this connection: commands are refused
        err = await v.cmd(bid, {"op": "column.create", "title": "x"})
        assert err["type"] == "error" and err["code"] in ("not_joined", "not_found")

    assert_error(await call(http, "GET", f"{base}{API}/{bid}"), 410, "gone")
    assert_error(await call(http, "GET", f"{base}{API}/{bid}/cards"), 410, "gone")
    join = await viewers[0].join(bid)
    assert (join["type"], join["reason"]) == ("left", "board_deleted"), join

    conn = await asyncpg.connect(database_url)
    try:
        key = uuid.UUID(bid)
        for table, column in [
            ("boards", "id"),
            ("board_members", "board_id"),
            ("columns", "board_id"),
            ("cards", "board_id"),
            ("board_events", "board_id"),
        ]:
            n = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", key)
            assert n == 0, table
    finally:
        await conn.close()
