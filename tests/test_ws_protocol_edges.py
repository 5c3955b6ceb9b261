"""Protocol edges, sent as documented messages (or as raw WebSocket frames): frames nested
hundreds of levels deep, a frame of exactly the size limit, a frame of the wrong kind, UUIDs
in other forms than the canonical one, and frames that break RFC 6455 itself."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from tests.conftest import ENCODINGS, create_board, create_column
from tests.rawws import BINARY, CLOSE, PING, TEXT, RawWs, frame
from tests.wsclient import WsClient, new_rid


@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """Everything the in-process servers log, structlog events and stdlib records (aiohttp's
    "Error handling request" and asyncio's unretrieved task exceptions go there)."""
    caplog.set_level(logging.INFO)
    with capture_logs() as events:
        yield events
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    problems += [e for e in events if e.get("exc_info") or e.get("log_level") in ("error", "critical")]
    assert problems == [], problems
    assert "Traceback" not in caplog.text


# ---------------------------------------------------------------- deeply nested frames


def _deep(encoding: str, kind: str, depth: int) -> bytes:
    """A value nested ``depth`` levels deep, encoded by hand (msgspec's encoder would itself
    refuse to go that deep)."""
    if encoding == "json":
        return b"[" * depth + b"]" * depth if kind == "list" else b'{"k":' * depth + b"1" + b"}" * depth
    return b"\x91" * depth + b"\xc0" if kind == "list" else b"\x81\xa1k" * depth + b"\xc0"


def _object(encoding: str, items: list[tuple[str, bytes]]) -> bytes:
    """A map of already-encoded values, in this field order."""
    if encoding == "json":
        return b"{" + b",".join(msgspec.json.encode(k) + b":" + v for k, v in items) + b"}"
    assert len(items) < 16
    return bytes((0x80 | len(items),)) + b"".join(msgspec.msgpack.encode(k) + v for k, v in items)


def _deep_frames(encoding: str, bid: str, depth: int) -> Iterator[tuple[str, bytes | str]]:
    enc = msgspec.json.encode if encoding == "json" else msgspec.msgpack.encode
    for kind in ("list", "map"):
        deep = _deep(encoding, kind, depth)
        shapes = {
            "cmd op": [("type", enc("cmd")), ("rid", enc("d-1")), ("board_id", enc(bid)), ("op", deep)],
            # the tag last: msgspec skips the other fields looking for it
            "cmd op, type last": [
                ("rid", enc("d-2")),
                ("board_id", enc(bid)),
                ("op", deep),
                ("type", enc("cmd")),
            ],
            "presence value": [
                ("type", enc("presence")),
                ("rid", enc("d-3")),
                ("board_id", enc(bid)),
                ("state", _object(encoding, [("cursor", deep)])),
            ],
            "presence state": [("type", enc("presence")), ("board_id", enc(bid)), ("state", deep)],
            "rid": [("type", enc("ping")), ("rid", deep)],
            "unknown field first": [("extra", deep), ("type", enc("ping")), ("rid", enc("d-4"))],
        }
        for name, items in shapes.items():
            data = _object(encoding, items)
            yield f"{kind}: {name}", data if encoding == "msgpack" else data.decode()


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("depth", [1000, 10_000])
async def test_deeply_nested_frames_are_bad_frame(http, server, connect, server_logs, encoding, depth):
    board = await create_board(http, server.base)
    bid = board["id"]
    col = await create_column(http, server.base, bid)
    a = await connect(encoding)
    assert (await a.join(bid))["type"] == "joined"
    for name, data in _deep_frames(encoding, bid, depth):
        assert len(data) <= 65_536, name
        err = await a.error_after(data)
        # The frame cannot be read, so no rid can be named.
        assert err["code"] == "bad_frame" and "rid" not in err, (name, err)
        assert "nested too deeply" in err["message"], (name, err)
        ack = await a.cmd(bid, {"op": "card.create", "column_id": col["id"], "title": name})
        assert ack["type"] == "ack", (name, ack)
    assert not a.closed.is_set()
    # A whole frame that is a deep array is refused before its nesting is read.
    whole = _deep(encoding, "list", depth)
    err = await a.error_after(whole if encoding == "msgpack" else whole.decode())
    assert err["code"] == "bad_request" and "rid" not in err, err
    await a.ping()


async def test_deeply_nested_rest_bodies_are_400(http, server, server_logs):
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    url = f"{server.base}/api/v1/boards/{board['id']}/cards"
    for body in (
        _deep("json", "list", 1000),
        _deep("json", "map", 1000),
        b'{"column_id":"' + col["id"].encode() + b'","title":' + _deep("json", "list", 1000) + b"}",
        b'{"column_id":"' + col["id"].encode() + b'","title":"x","x":' + _deep("json", "map", 1000) + b"}",
    ):
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400, await r.text()
            assert (await r.json())["error"]["code"] == "bad_request"


# ---------------------------------------------------------------- frame size


def _sized_card(client: WsClient, bid: str, col: str, size: int) -> tuple[str, bytes | str]:
    """A valid card.create frame of exactly ``size`` bytes (4-byte characters let a
    description of at most 20,000 characters fill 64 KiB)."""
    rid = new_rid()
    msg: dict[str, Any] = {
        "type": "cmd",
        "rid": rid,
        "board_id": bid,
        "op": {"op": "card.create", "column_id": col, "title": "big", "description": ""},
    }

    def encoded(description: str) -> bytes:
        msg["op"]["description"] = description
        return client.encode(msg)

    emoji = (size - len(encoded(""))) // 4
    while len(encoded("\U0001f600" * emoji)) > size:
        emoji -= 1
    description = "\U0001f600" * emoji
    description += "a" * (size - len(encoded(description)))
    data = encoded(description)
    assert len(data) == size and len(description) <= 20_000
    return rid, data if client.encoding == "msgpack" else data.decode()


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_frame_of_exactly_max_frame_bytes_is_accepted_one_more_is_1009(
    http, server, connect, encoding
):
    board = await create_board(http, server.base)
    bid = board["id"]
    col = (await create_column(http, server.base, bid))["id"]
    a = await connect(encoding)
    limit = a.welcome["max_frame_bytes"]
    assert limit == 65_536
    await a.join(bid)
    rid, data = _sized_card(a, bid, col, limit)
    await a.send_raw(data)
    (ack,) = (await a.wait_answers([rid])).values()
    assert ack["type"] == "ack", ack
    rid, data = _sized_card(a, bid, col, limit + 1)
    await a.send_raw(data)
    async with asyncio.timeout(10):
        await a.closed.wait()
    assert a.ws.close_code == 1009
    assert a.answers(rid) == []


# ---------------------------------------------------------------- frame kind


async def test_a_text_frame_on_a_msgpack_connection_is_bad_frame(http, server, connect):
    a = await connect("msgpack")
    for text in ('{"type":"ping","rid":"p"}', "\x81\xa4type\xa4ping", "7"):
        err = await a.error_after(text)
        assert err["code"] == "bad_frame" and "rid" not in err, (text, err)
        assert "text frame" in err["message"]
    await a.ping()


# ---------------------------------------------------------------- UUID forms


def _other_forms(canonical: str, encoding: str) -> list[Any]:
    u = uuid.UUID(canonical)
    forms: list[Any] = [canonical.upper(), u.hex, "{" + canonical + "}", f"urn:uuid:{canonical}"]
    forms.append(canonical[:-1])
    if encoding == "msgpack":
        forms.append(u.bytes)  # a 16-byte bin
    return forms


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_uuids_are_accepted_only_in_canonical_form(http, server, connect, encoding):
    board = await create_board(http, server.base)
    bid = board["id"]
    col = (await create_column(http, server.base, bid))["id"]
    a = await connect(encoding)
    for form in _other_forms(bid, encoding):
        err = await a.request({"type": "join", "board_id": form})
        assert err["type"] == "error" and err["code"] == "bad_request", (form, err)
        assert "`$.board_id`" in err["message"] and "lower-case, hyphenated" in err["message"], err
    assert (await a.join(bid))["type"] == "joined"
    for form in _other_forms(bid, encoding):
        err = await a.request({"type": "cmd", "board_id": form, "op": {"op": "column.create", "title": "X"}})
        assert (err["type"], err["code"]) == ("error", "bad_request"), (form, err)
        assert "`$.board_id`" in err["message"], err
    for form in _other_forms(col, encoding):
        op = {"op": "card.create", "column_id": form, "title": "X"}
        err = await a.cmd(bid, op)
        assert (err["type"], err["code"]) == ("error", "bad_request"), (form, err)
        assert "`$.op.column_id`" in err["message"], err
        err = await a.request({"type": "presence", "board_id": form, "state": {}})
        assert (err["type"], err["code"]) == ("error", "bad_request"), (form, err)
    ack = await a.cmd(bid, {"op": "card.create", "column_id": col, "title": "X"})
    assert ack["type"] == "ack" and str(ack["board_id"]) == bid


async def test_rest_uuids_are_accepted_only_in_canonical_form(http, server):
    board = await create_board(http, server.base)
    bid = board["id"]
    col = (await create_column(http, server.base, bid))["id"]
    base = f"{server.base}/api/v1/boards"
    for form in _other_forms(bid, "json"):
        async with http.get(f"{base}/{form}") as r:
            assert r.status == 404, (form, await r.text())
            assert (await r.json())["error"]["code"] == "not_found"
    for form in _other_forms(col, "json"):
        async with http.post(f"{base}/{bid}/cards", json={"column_id": form, "title": "X"}) as r:
            assert r.status == 400, (form, await r.text())
            body = await r.json()
            assert body["error"]["code"] == "bad_request" and "`$.column_id`" in body["error"]["message"]
        async with http.get(f"{base}/{bid}/cards", params={"column_id": form}) as r:
            assert r.status == 400, (form, await r.text())
        async with http.get(f"{base}/{bid}/columns/{form}") as r:
            assert r.status == 404, (form, await r.text())
    async with http.post(f"{base}/{bid}/cards", json={"column_id": col, "title": "X"}) as r:
        assert r.status == 201, await r.text()
    async with http.get(f"{base}/{bid}/cards", params={"column_id": col}) as r:
        assert r.status == 200 and [c["title"] for c in (await r.json())["cards"]] == ["X"]


# ---------------------------------------------------------------- RFC 6455 violations


def _ping(rid: str) -> bytes:
    return msgspec.json.encode({"type": "ping", "rid": rid})


async def _raw(server: Any, after_request: bytes = b"") -> RawWs:
    return await RawWs.connect(server.ws_url, "boardcast.v1.json", after_request)


async def test_an_unmasked_client_frame_is_closed_with_1002(server, server_logs):
    for unmasked in (frame(TEXT, _ping("u-1"), masked=False), frame(PING, b"hi", masked=False)):
        ws = await _raw(server)
        try:
            op, welcome = await ws.recv()
            assert op == TEXT and msgspec.json.decode(welcome)["type"] == "welcome"
            await ws.send(frame(TEXT, _ping("m-1")))
            op, pong = await ws.recv()
            assert msgspec.json.decode(pong) == {"type": "pong", "rid": "m-1"}
            # The unmasked frame and a masked one behind it in the same write: neither is read.
            await ws.send(unmasked + frame(TEXT, _ping("m-2")))
            async with asyncio.timeout(10):
                frames, code = await ws.recv_until_close()
            assert frames == [] and code == 1002
        finally:
            await ws.close()


async def test_an_unmasked_frame_sent_with_the_upgrade_request_is_closed_with_1002(server, server_logs):
    ws = await _raw(server, after_request=frame(TEXT, _ping("m-0")) + frame(TEXT, _ping("u-0"), masked=False))
    try:
        async with asyncio.timeout(10):
            frames, code = await ws.recv_until_close()
        assert code == 1002
        # No message of that connection was handled (the welcome may have gone out first).
        assert [msgspec.json.decode(p)["type"] for _, p in frames] in ([], ["welcome"])
    finally:
        await ws.close()


async def test_masked_frames_split_anywhere_and_of_every_length_form_are_read(start_server, server_logs):
    srv = await start_server(max_frame_bytes=100_000)
    ws = await _raw(srv)
    try:
        await ws.recv()  # welcome
        small, medium, large = (
            frame(TEXT, _ping(rid) + b" " * pad) for rid, pad in (("s", 0), ("m", 300), ("l", 70_000))
        )
        assert medium[1] & 0x7F == 126 and large[1] & 0x7F == 127
        # One byte at a time (headers split everywhere), then all three in one write.
        for b in small + medium:
            await ws.send(bytes((b,)))
        await ws.send(large + small + frame(PING, b"p"))
        rids = []
        async with asyncio.timeout(10):
            while len(rids) < 4:
                op, payload = await ws.recv()
                if op == TEXT:
                    rids.append(msgspec.json.decode(payload)["rid"])
                else:
                    assert op == 0xA and payload == b"p"  # the pong to our WebSocket ping
        assert rids == ["s", "m", "l", "s"]
        await ws.send(frame(CLOSE, (1000).to_bytes(2, "big")))
        async with asyncio.timeout(10):
            _, code = await ws.recv_until_close()
        assert code == 1000
    finally:
        await ws.close()


@pytest.mark.parametrize("protocol", ["boardcast.v1.json", "boardcast.v1.msgpack"])
async def test_invalid_utf8_in_a_text_frame_is_closed_with_1007(server, server_logs, protocol):
    ws = await RawWs.connect(server.ws_url, protocol)
    try:
        await ws.recv()  # welcome
        await ws.send(frame(TEXT, b'{"type":"ping","rid":"\xff\xfe"}'))
        async with asyncio.timeout(10):
            frames, code = await ws.recv_until_close()
        assert frames == [] and code == 1007
    finally:
        await ws.close()
    # A binary frame holds bytes, not text: the same bytes are a bad_frame, not a close.
    ws = await RawWs.connect(server.ws_url, "boardcast.v1.json")
    try:
        await ws.recv()
        await ws.send(frame(BINARY, b'{"type":"ping","rid":"\xff\xfe"}'))
        _, payload = await ws.recv()
        assert msgspec.json.decode(payload)["code"] == "bad_frame"
    finally:
        await ws.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_presence_state_is_bounded_in_size(http, server, connect, encoding):
    """Presence values are scalars (nested ones are refused: see above and
    test_ws_bad_input), with bounded keys, strings and key count."""
    board = await create_board(http, server.base)
    bid = board["id"]
    a = await connect(encoding)
    await a.join(bid)
    for state in ({"k" * 33: 1}, {"k": "v" * 257}, {f"k{i}": None for i in range(9)}, {"k": {}}, {"k": []}):
        err = await a.request({"type": "presence", "board_id": bid, "state": state})
        assert (err["type"], err["code"]) == ("error", "bad_request"), (state, err)
    # The largest state allowed is accepted (no reply) and reaches the other viewers.
    b = await connect("json" if encoding == "msgpack" else "msgpack")
    await b.join(bid)
    most = {f"{i}".ljust(32, "k"): "v" * 256 for i in range(8)}
    before = len(a.log)
    await a.send({"type": "presence", "rid": "most", "board_id": bid, "state": most})
    diff = await b.expect("presence", lambda m: any(u.get("state") for u in m.get("updated", [])))
    assert diff["updated"][0]["state"] == most
    await a.ping()
    assert [m for m in a.log[before:] if m["type"] == "error"] == []
