"""The per-connection limit on board commands, joins and leaves (the ws_commands tier): a
refused request gets `rate_limited` naming its rid, changes nothing, and the connection (and
its neighbours) carry on."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server.config import Rate
from tests.conftest import ENCODINGS, create_board, create_column
from tests.wsclient import new_rid


def _assert_limited(answer: dict[str, Any], rid: str) -> None:
    assert answer["type"] == "error" and answer["code"] == "rate_limited", answer
    assert answer["rid"] == rid, answer
    assert answer["details"]["tier"] == "ws_commands", answer
    assert answer["details"]["retry_after_s"] > 0, answer


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_commands_joins_and_leaves_share_the_connection_limit(http, start_server, connect, encoding):
    srv = await start_server(rate_ws_commands=Rate(4, 60))
    bid = (await create_board(http, srv.base))["id"]
    col = (await create_column(http, srv.base, bid))["id"]
    a = await connect(encoding, url=srv.ws_url)
    neighbour = await connect(encoding, url=srv.ws_url)

    assert (await a.join(bid))["type"] == "joined"  # 1
    for i in range(2):  # 2, 3
        answer = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": f"c{i}"})
        assert answer["type"] == "ack", answer
    # a refused request counts too: a command to a board not joined is answered not_joined
    stranger = str(uuid.uuid4())
    rid = new_rid()
    answer = await a.cmd(stranger, {"op": "column.create", "title": "x"}, rid=rid)  # 4
    assert answer["code"] == "not_joined", answer

    seq = (await neighbour.join(bid))["seq"]
    rid = new_rid()
    _assert_limited(await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "over"}, rid=rid), rid)
    rid = new_rid()
    _assert_limited(await a.request({"type": "join", "rid": rid, "board_id": bid}), rid)
    rid = new_rid()
    _assert_limited(await a.request({"type": "leave", "rid": rid, "board_id": bid}), rid)

    # nothing was applied, the connection is open and still joined, the neighbour unaffected
    await a.ping()
    assert not a.closed.is_set()
    answer = await neighbour.cmd(bid, {"op": "card.create", "column_id": col, "title": "neighbour"})
    assert answer["type"] == "ack" and answer["seq"] == seq + 1, answer
    events = await a.wait_seq(bid, seq + 1)
    assert [e["seq"] for e in events if e["seq"] > seq] == [seq + 1]
