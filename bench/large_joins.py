"""The ``joins`` load role of ``large_board`` (run by :mod:`bench.worker`): how long a client
waits for the snapshot of a large board.

After ``go`` it makes the **cold join**: the first join of the board since the server
started, so it includes the board's activation from PostgreSQL; it reports it (with what the
snapshot held, decoded once as a check) and waits for a second ``go``; then the same for the
first join in JSON. Then ``rounds`` times,
for each encoding: one ``card.update`` on a connection of its own (the board's seq moves, so
the server has no snapshot encoded yet) and a join on a new connection (**fresh**), then a
second join with nothing changed in between (**cached**: the bytes encoded for the first).
Each join is timed from sending ``join`` until its ``joined`` frame has been read whole, on a
connection already welcomed; nothing is decoded before the time is taken.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import msgspec

from bench.common import ENCODER, MSGPACK_PROTOCOL, Msg, decode_frame, emit, percentile

JSON_PROTOCOL = "boardcast.v1.json"
PROTOCOLS = {"msgpack": MSGPACK_PROTOCOL, "json": JSON_PROTOCOL}
_JSON_FRAME: msgspec.json.Decoder[list[Msg] | Msg] = msgspec.json.Decoder(list[Msg] | Msg)


class _Counted(msgspec.Struct):
    """What a snapshot holds, counted (every entity kept undecoded)."""

    columns: list[msgspec.Raw]
    cards: list[msgspec.Raw]
    checklists: list[msgspec.Raw] = []
    items: list[msgspec.Raw] = []
    comments: list[msgspec.Raw] = []
    labels: list[msgspec.Raw] = []
    fields: list[msgspec.Raw] = []


class _JoinedSnapshot(msgspec.Struct):
    type: str
    rid: str | None = None
    snapshot: _Counted | None = None


def _messages(data: bytes | str) -> list[Msg]:
    if isinstance(data, bytes):
        return decode_frame(data)
    decoded = _JSON_FRAME.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


async def _open(session: aiohttp.ClientSession, url: str, encoding: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        url,
        protocols=(PROTOCOLS[encoding],),
        max_msg_size=0,
        compress=0,
        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
    )
    if ws.protocol != PROTOCOLS[encoding]:
        raise ConnectionError(f"server chose {ws.protocol}, not {PROTOCOLS[encoding]}")
    async with asyncio.timeout(30):
        while not any(m.type == "welcome" for m in _messages((await ws.receive()).data)):
            pass
    return ws


def _encode(encoding: str, msg: dict[str, Any]) -> bytes | str:
    return ENCODER.encode(msg) if encoding == "msgpack" else json.dumps(msg)


async def _join(
    session: aiohttp.ClientSession, url: str, board: str, encoding: str, rid: str, count: bool = False
) -> dict[str, Any]:
    """One timed join on a new connection (closed afterwards)."""
    ws = await _open(session, url, encoding)
    try:
        data = _encode(encoding, {"type": "join", "rid": rid, "board_id": board})
        async with asyncio.timeout(60):
            t0 = time.monotonic()
            await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
            while True:
                frame = await ws.receive()
                t1 = time.monotonic()
                if frame.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    raise ConnectionError(f"closed while joining: {frame.type.name} {ws.close_code}")
                for m in _messages(frame.data):
                    if m.rid == rid and m.type == "error":
                        raise ConnectionError(f"join refused: {m.code}")
                    if m.rid == rid and m.type == "joined":
                        r: dict[str, Any] = {"ms": (t1 - t0) * 1000, "bytes": len(frame.data)}
                        if count:
                            r["snapshot"] = _count(frame.data, rid)
                        return r
    finally:
        await ws.close()


def _count(data: bytes | str, rid: str) -> dict[str, int]:
    t = list[_JoinedSnapshot] | _JoinedSnapshot
    decoded = (
        msgspec.msgpack.decode(data, type=t) if isinstance(data, bytes) else msgspec.json.decode(data, type=t)
    )
    for m in decoded if isinstance(decoded, list) else [decoded]:
        if m.rid == rid and m.snapshot is not None:
            s = m.snapshot
            return {
                k: len(getattr(s, k))
                for k in ("columns", "cards", "checklists", "items", "comments", "labels", "fields")
            }
    return {}


async def role_joins(spec: dict[str, Any], ctl: Any) -> dict[str, Any]:
    url, board, tag = spec["url"], spec["board_id"], spec["tag"]
    cards: list[str] = spec["cards"]
    encodings: list[str] = spec.get("encodings", ["msgpack", "json"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await ctl.ready(connected=0)
        cold = await _join(session, url, board, "msgpack", f"{tag}-cold", count=True)
        emit({"event": "cold", **cold})
        await ctl.expect("go")
        # The board's first snapshot in JSON (nothing changed since the cold join's): the
        # server encodes it whole, as it did the cold join's in MessagePack.
        first_json = await _join(session, url, board, "json", f"{tag}-first-json")
        emit({"event": "first_json", **first_json})
        await ctl.expect("go")
        # The writer: its own connection, joined (it is sent every event; a reader drains it).
        writer = await _open(session, url, "msgpack")
        acks: dict[str, asyncio.Future[None]] = {}
        joined = asyncio.get_running_loop().create_future()

        async def read() -> None:
            while True:
                frame = await writer.receive()
                if frame.type is not aiohttp.WSMsgType.BINARY:
                    return
                for m in decode_frame(frame.data):
                    if m.rid == f"{tag}-wj" and not joined.done():
                        joined.set_result(m.type)
                    fut = acks.get(m.rid or "")
                    if fut is not None and not fut.done():
                        if m.type == "ack":
                            fut.set_result(None)
                        else:
                            fut.set_exception(ConnectionError(f"update refused: {m.type} {m.code}"))

        reader = asyncio.create_task(read())
        await writer.send_bytes(ENCODER.encode({"type": "join", "rid": f"{tag}-wj", "board_id": board}))
        async with asyncio.timeout(60):
            await joined
        timings: dict[str, dict[str, list[float]]] = {e: {"fresh": [], "cached": []} for e in encodings}
        sizes: dict[str, int] = {}
        n = 0
        for r in range(spec["rounds"]):
            for enc in encodings:
                n += 1
                rid = f"{tag}-u{n}"
                acks[rid] = asyncio.get_running_loop().create_future()
                op = {"op": "card.update", "card_id": cards[n % len(cards)], "title": f"large {n}"}
                await writer.send_bytes(
                    ENCODER.encode({"type": "cmd", "rid": rid, "board_id": board, "op": op})
                )
                async with asyncio.timeout(30):
                    await acks[rid]
                for kind in ("fresh", "cached"):
                    j = await _join(session, url, board, enc, f"{tag}-{enc}-{kind}-{r}")
                    timings[enc][kind].append(j["ms"])
                    sizes[enc] = j["bytes"]
        reader.cancel()
        await writer.close()
    return {
        "cold": cold,
        "joins": {
            enc: {
                kind: {"n": len(v), "p50_ms": percentile(v, 50), "max_ms": max(v, default=None), "all_ms": v}
                for kind, v in by_kind.items()
            }
            for enc, by_kind in timings.items()
        },
        "snapshot_bytes": sizes,
        "updates": n,
    }
