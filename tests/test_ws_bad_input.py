"""Bad input over the WebSocket, in both encodings: a structured error naming the request id,
nothing changed, the connection still usable and its neighbours undisturbed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.boardmodel import rest_snapshot
from tests.conftest import ENCODINGS, create_board, create_column
from tests.wsclient import WsClient, new_rid


class Scene:
    """A board with two columns of one card each; ``a`` sends the bad input while ``b``, on
    the same board, must notice nothing."""

    def __init__(self, http, server, a: WsClient, b: WsClient, bid: str, cols: list[str], cards: list[str]):
        self.http, self.server, self.a, self.b = http, server, a, b
        self.bid, self.cols, self.cards = bid, cols, cards

    async def seq(self) -> int:
        return int((await rest_snapshot(self.http, self.server.base, self.bid))["seq"])

    async def assert_unharmed(self, seq_before: int) -> None:
        """The bad input changed nothing, ``a`` still works, and ``b`` saw nothing odd."""
        await self.a.ping()
        assert await self.seq() == seq_before
        assert not self.a.closed.is_set()
        await self.b.ping()
        assert [m for m in self.b.log if m["type"] in ("error", "event", "left")] == []
        assert self.a.events(self.bid) == []


@pytest.fixture
async def scene(http, server, connect, request) -> Scene:
    encoding = request.param
    board = await create_board(http, server.base, "Bad input")
    bid = board["id"]
    cols = [(await create_column(http, server.base, bid, t))["id"] for t in ("A", "B")]
    cards = []
    for col in cols:
        async with http.post(
            f"{server.base}/api/v1/boards/{bid}/cards", json={"column_id": col, "title": "card"}
        ) as r:
            assert r.status == 201, await r.text()
            cards.append((await r.json())["id"])
    a = await connect(encoding)
    b = await connect("json" if encoding == "msgpack" else "msgpack")
    for cl in (a, b):
        assert (await cl.join(bid))["seq"] == 4
    return Scene(http, server, a, b, bid, cols, cards)


def _encoded(client: WsClient, msg: Any) -> bytes | str:
    data = msgspec.msgpack.encode(msg) if client.encoding == "msgpack" else msgspec.json.encode(msg)
    return data if client.encoding == "msgpack" else data.decode()


pytestmark = pytest.mark.parametrize("scene", ENCODINGS, indirect=True)


async def test_malformed_frames_are_bad_frame(scene):
    seq = await scene.seq()
    junk: list[bytes | str] = (
        [b"\xc1", b"\x81\xa4type", b"\x81\xa4type\xa4pi"]  # invalid byte, truncated map, truncated str
        if scene.a.encoding == "msgpack"
        else ['{"type": "ping"', "not json at all", '{"type": ping}']
    )
    for data in junk:
        err = await scene.a.error_after(data)
        assert err["code"] == "bad_frame", (data, err)
        assert "rid" not in err
        await scene.assert_unharmed(seq)


async def test_a_frame_of_the_other_kind(scene):
    """A text frame on a msgpack connection is not a crash but a bad_frame, unread; a binary
    one on a JSON connection is decoded as JSON."""
    seq = await scene.seq()
    a = scene.a
    if a.encoding == "msgpack":
        err = await a.error_after('{"type":"ping","rid":"p"}')  # not msgpack
        assert err["code"] == "bad_frame" and "rid" not in err, err
    else:
        await a.send_raw(msgspec.json.encode({"type": "ping", "rid": "binary-ping"}))
        pong = await a.expect("pong", lambda m: m.get("rid") == "binary-ping")
        assert pong == {"type": "pong", "rid": "binary-ping"}
    await scene.assert_unharmed(seq)


async def test_unknown_message_type_and_unknown_op(scene):
    seq = await scene.seq()
    err = await scene.a.error_after(_encoded(scene.a, {"type": "explode", "rid": "u-1"}))
    assert err["code"] == "unknown_type" and err["rid"] == "u-1", err
    await scene.assert_unharmed(seq)

    msg = {"type": "cmd", "rid": "u-2", "board_id": scene.bid, "op": {"op": "card.explode"}}
    err = await scene.a.error_after(_encoded(scene.a, msg))
    assert err["code"] == "unknown_type" and err["rid"] == "u-2", err
    await scene.assert_unharmed(seq)


async def test_wrong_field_types_are_bad_request_with_the_rid(scene):
    seq = await scene.seq()
    bid, col, card = scene.bid, scene.cols[0], scene.cards[0]
    cases = [
        {"type": "cmd", "rid": "t-1", "board_id": "not-a-uuid", "op": {"op": "column.create", "title": "X"}},
        {"type": "cmd", "rid": "t-2", "board_id": bid, "op": {"op": "column.create", "title": 42}},
        {"type": "cmd", "rid": "t-3", "board_id": bid, "op": {"op": "column.create", "title": ""}},
        {"type": "cmd", "rid": "t-4", "board_id": bid, "op": {"op": "card.create", "column_id": col}},
        {
            "type": "cmd",
            "rid": "t-5",
            "board_id": bid,
            "op": {"op": "card.move", "card_id": card, "column_id": col, "after": 7},
        },
        {"type": "cmd", "rid": "t-6", "board_id": bid, "op": "card.create"},
        {
            "type": "cmd",
            "rid": "t-7",
            "board_id": bid,
            "op": {"op": "card.update", "card_id": card, "title": "x" * 201},
        },
        {"type": "join", "rid": "t-8", "board_id": bid, "since_seq": -1},
        {"type": "presence", "rid": "t-9", "board_id": bid, "state": {"k": [1, 2]}},
        {"type": "presence", "rid": "t-10", "board_id": bid, "state": {f"k{i}": i for i in range(9)}},
        {"type": "cmd", "rid": "t-11", "board_id": bid},
    ]
    for msg in cases:
        err = await scene.a.error_after(_encoded(scene.a, msg))
        assert err["code"] == "bad_request" and err["rid"] == msg["rid"], (msg, err)
        await scene.assert_unharmed(seq)
    # Without a usable rid the error still comes, naming none.
    for msg in ({"type": "ping", "rid": 5}, {"type": "ping", "rid": "x" * 65}, [1, 2, 3]):
        err = await scene.a.error_after(_encoded(scene.a, msg))
        assert err["code"] == "bad_request" and "rid" not in err, (msg, err)
        await scene.assert_unharmed(seq)


async def test_unknown_fields_are_bad_request(scene):
    seq = await scene.seq()
    for msg in (
        {"type": "ping", "rid": "f-1", "extra": True},
        {
            "type": "cmd",
            "rid": "f-2",
            "board_id": scene.bid,
            "op": {"op": "column.create", "title": "X", "colour": "red"},
        },
        {"type": "join", "rid": "f-3", "board_id": scene.bid, "since": 1},
    ):
        err = await scene.a.error_after(_encoded(scene.a, msg))
        assert err["code"] == "bad_request" and err["rid"] == msg["rid"], (msg, err)
        assert "unknown field" in err["message"]
        await scene.assert_unharmed(seq)


async def test_unknown_ids_are_not_found(scene):
    seq = await scene.seq()
    a, bid = scene.a, scene.bid
    nobody = str(uuid.uuid4())
    err = await a.join(nobody)
    assert err["type"] == "error" and err["code"] == "not_found" and str(err["board_id"]) == nobody
    await scene.assert_unharmed(seq)
    for op, what in (
        ({"op": "card.create", "column_id": nobody, "title": "X"}, "column"),
        ({"op": "column.update", "column_id": nobody, "title": "X"}, "column"),
        ({"op": "card.move", "card_id": nobody, "column_id": scene.cols[0]}, "card"),
        ({"op": "card.move", "card_id": scene.cards[0], "column_id": nobody}, "column"),
        ({"op": "card.move", "card_id": scene.cards[0], "column_id": scene.cols[1], "after": nobody}, "card"),
        ({"op": "card.delete", "card_id": nobody}, "card"),
        ({"op": "column.move", "column_id": scene.cols[0], "before": nobody}, "column"),
    ):
        err = await a.cmd(bid, op)
        assert err["type"] == "error" and err["code"] == "not_found", (op, err)
        assert err["details"] == {what: nobody}, (op, err)
        assert str(err["board_id"]) == bid
        await scene.assert_unharmed(seq)


async def test_bad_placements_are_bad_request(scene):
    seq = await scene.seq()
    a, bid = scene.a, scene.bid
    card_a, card_b = scene.cards
    col_a, col_b = scene.cols
    # A neighbour in another column than the target.
    err = await a.cmd(bid, {"op": "card.move", "card_id": card_a, "column_id": col_a, "after": card_b})
    assert err["type"] == "error" and err["code"] == "bad_request", err
    assert err["details"] == {"neighbour": card_b}
    await scene.assert_unharmed(seq)
    # Both after and before.
    op = {"op": "card.move", "card_id": card_a, "column_id": col_b, "after": card_b, "before": card_b}
    err = await a.cmd(bid, op)
    assert err["type"] == "error" and err["code"] == "bad_request", err
    await scene.assert_unharmed(seq)
    err = await a.cmd(bid, {"op": "column.create", "title": "X", "after": col_a, "before": col_b})
    assert err["code"] == "bad_request", err
    await scene.assert_unharmed(seq)
    # Next to itself.
    err = await a.cmd(bid, {"op": "card.move", "card_id": card_a, "column_id": col_a, "before": card_a})
    assert err["code"] == "bad_request", err
    await scene.assert_unharmed(seq)
    # Nothing to update.
    err = await a.cmd(bid, {"op": "card.update", "card_id": card_a})
    assert err["code"] == "bad_request", err
    await scene.assert_unharmed(seq)


async def test_messages_before_join_are_not_joined(scene, connect):
    seq = await scene.seq()
    fresh = await connect(scene.a.encoding)
    scene.a = fresh  # the unharmed checks now look at the fresh connection
    bid = scene.bid
    err = await fresh.cmd(bid, {"op": "column.create", "title": "X"}, rid="nj-1")
    assert (err["type"], err["code"], err["rid"], str(err["board_id"])) == (
        "error",
        "not_joined",
        "nj-1",
        bid,
    )
    await scene.assert_unharmed(seq)
    err = await fresh.request({"type": "presence", "rid": "nj-2", "board_id": bid, "state": {"x": 1}})
    assert (err["code"], err["rid"]) == ("not_joined", "nj-2")
    await scene.assert_unharmed(seq)
    err = await fresh.request({"type": "leave", "rid": "nj-3", "board_id": bid})
    assert (err["code"], err["rid"]) == ("not_joined", "nj-3")
    await scene.assert_unharmed(seq)
    # After all that it can join and work normally.
    assert (await fresh.join(bid))["seq"] == seq
    ack = await fresh.cmd(bid, {"op": "column.create", "title": "X"})
    assert ack["type"] == "ack" and ack["seq"] == seq + 1


async def test_the_actor_survives_a_storm_of_bad_commands(scene):
    """Many refused commands pipelined with good ones: the good ones are applied in order,
    each refusal names its rid, and no seq is consumed by a refusal."""
    seq = await scene.seq()
    a, bid = scene.a, scene.bid
    nobody = str(uuid.uuid4())
    good, bad = [], []
    for i in range(30):
        if i % 3 == 0:
            good.append(
                await a.send_cmd(bid, {"op": "card.create", "column_id": scene.cols[0], "title": f"ok {i}"})
            )
        else:
            bad.append(await a.send_cmd(bid, {"op": "card.create", "column_id": nobody, "title": "no"}))
    answers = await a.wait_answers(good + bad)
    assert [answers[r]["seq"] for r in good] == list(range(seq + 1, seq + 1 + len(good)))
    assert all(answers[r]["code"] == "not_found" for r in bad)
    evs = await scene.b.wait_seq(bid, seq + len(good))
    assert [e["rid"] for e in evs] == good


async def test_an_oversized_frame_closes_only_that_connection(http, start_server, connect, scene):
    srv = await start_server(max_frame_bytes=1024)
    board = await create_board(http, srv.base)
    col = await create_column(http, srv.base, board["id"])
    bid = board["id"]
    big = await connect(scene.a.encoding, url=srv.ws_url)
    other = await connect(scene.b.encoding, url=srv.ws_url)
    assert big.welcome["max_frame_bytes"] == 1024
    for cl in (big, other):
        await cl.join(bid)
    # Just under the limit is fine...
    ok = await big.cmd(
        bid, {"op": "card.create", "column_id": col["id"], "title": "x", "description": "d" * 800}
    )
    assert ok["type"] == "ack"
    # ...over it, the connection is closed with 1009.
    huge = {
        "type": "cmd",
        "rid": new_rid(),
        "board_id": bid,
        "op": {"op": "card.create", "column_id": col["id"], "title": "x", "description": "d" * 2000},
    }
    await big.send_raw(_encoded(big, huge))
    async with asyncio.timeout(10):
        await big.closed.wait()
    assert big.ws.close_code == 1009
    assert big.answers(huge["rid"]) == []
    # The neighbour keeps working, and the board holds only the first card.
    await other.ping()
    ack = await other.cmd(bid, {"op": "card.create", "column_id": col["id"], "title": "after"})
    assert ack["type"] == "ack" and ack["seq"] == ok["seq"] + 1
    await other.wait_seq(bid, ack["seq"])
    assert [c["title"] for c in (await rest_snapshot(http, srv.base, bid))["cards"]] == ["x", "after"]


async def test_no_boardcast_subprotocol_is_closed_with_4002(http, server, scene):
    for protocols in (("chat",), ()):
        async with http.ws_connect(server.ws_url, protocols=protocols) as ws:
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            assert ws.close_code == 4002
    # Meanwhile the real clients carry on.
    await scene.assert_unharmed(await scene.seq())
