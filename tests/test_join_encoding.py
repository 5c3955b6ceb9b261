"""A `joined` is built from parts encoded once per codec (the viewer list once per run of
joins, the snapshot once per seq) and spliced together: the bytes must be those of encoding
the whole message, in both encodings, and a change must never leave a joiner (or a REST
read, which shares the encoded snapshot) with the snapshot of an earlier seq."""

from __future__ import annotations

import uuid

from actors.board import joined_message
from protocol.codec import JSON, MSGPACK
from protocol.messages import Joined
from protocol.model import BoardSnapshot, PresenceEntry, Viewer
from tests.conftest import create_board, create_column
from tests.test_health_metrics import scrape, value


def test_spliced_joined_is_the_same_bytes_as_encoding_it_whole():
    board = uuid.uuid4()
    viewers = [
        Viewer(
            user_id=uuid.uuid4(),
            name="Developer",
            connections=[PresenceEntry(conn_id="a-1", state={"x": 1}), PresenceEntry(conn_id="a-2")],
        )
    ]
    snap = BoardSnapshot(id=board, title="t", description="", seq=7, columns=[], cards=[])
    for codec in (MSGPACK, JSON):
        whole = Joined(rid="r1", board_id=board, seq=7, snapshot=snap, viewers=viewers)
        parts = Joined(rid="r1", board_id=board, seq=7)
        assert joined_message(codec, parts, codec.encode(viewers), codec.encode(snap)) == codec.encode(whole)
        resumed = Joined(rid="r2", board_id=board, seq=7, events=[])
        assert joined_message(codec, resumed, codec.encode(viewers), None) == codec.encode(
            Joined(rid="r2", board_id=board, seq=7, events=[], viewers=viewers)
        )


async def test_joiners_in_both_encodings_get_the_snapshot_of_the_current_seq(http, server, connect):
    bid = (await create_board(http, server.base))["id"]
    m = await connect()
    j = await connect("json")
    first_m, first_j = await m.join(bid), await j.join(bid)
    assert first_m["snapshot"] == first_j["snapshot"]
    assert first_m["snapshot"]["columns"] == []

    # A change moves the seq: the next joiners (and REST) see it, in either encoding.
    await create_column(http, server.base, bid, "Doing")
    await m.wait_seq(bid, first_m["seq"] + 1)
    again_m = await connect()
    again_j = await connect("json")
    second_m, second_j = await again_m.join(bid), await again_j.join(bid)
    for joined in (second_m, second_j):
        assert joined["seq"] == first_m["seq"] + 1
        assert [c["title"] for c in joined["snapshot"]["columns"]] == ["Doing"]
        assert {c["conn_id"] for c in joined["viewers"][0]["connections"]} >= {
            m.welcome["conn_id"],
            j.welcome["conn_id"],
        }
    async with http.get(f"{server.base}/api/v1/boards/{bid}") as r:
        assert r.status == 200
        body = await r.json()
    assert [c["title"] for c in body["columns"]] == ["Doing"]

    # Every join went through an access read counted by the run-size histogram.
    samples = await scrape(http, server.base)
    assert value(samples, "boardcast_join_run_size_sum") == 4
    assert 1 <= value(samples, "boardcast_join_run_size_count") <= 4
