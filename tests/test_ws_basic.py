"""Join, command, ack and event over a real WebSocket, in both encodings."""

from __future__ import annotations

import pytest

from tests.conftest import ENCODINGS, create_board, create_column


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_join_command_ack_and_event_reach_every_viewer(http, server, connect, encoding):
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    a = await connect(encoding)
    b = await connect("json" if encoding == "msgpack" else "msgpack")
    ja = await a.join(board["id"])
    assert ja["type"] == "joined" and ja["seq"] == 1
    assert [c["title"] for c in ja["snapshot"]["columns"]] == ["Todo"]
    await b.join(board["id"])

    ack = await a.cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": "Hello"})
    assert ack["type"] == "ack" and ack["seq"] == 2
    for client in (a, b):
        evs = await client.wait_seq(board["id"], 2)
        ev = evs[-1]
        assert ev["event"]["kind"] == "card.created"
        assert ev["event"]["card"]["title"] == "Hello"
        assert str(ev["author"]) == str(a.welcome["user_id"])


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_command_before_join_is_refused_with_its_rid(http, server, connect, encoding):
    board = await create_board(http, server.base)
    a = await connect(encoding)
    err = await a.cmd(board["id"], {"op": "column.create", "title": "X"}, rid="early-1")
    assert err == {
        "type": "error",
        "code": "not_joined",
        "message": err["message"],
        "rid": "early-1",
        "board_id": board["id"],
    }
