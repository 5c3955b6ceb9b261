"""The baseline: the least a WebSocket broadcast server on aiohttp can do.

``python -m bench.baseline_server --port N``. No actors, no persistence, no access checks:
a ``cmd`` gets the next seq of its board, an ``ack`` to the sender, and one ``event``
encoded once and queued, as the same bytes, to every socket joined to the board. Each
socket's writer joins whatever is waiting into one MessagePack array frame, as Boardcast
does (protocol.codec.Codec.batch), so the two differ only in what Boardcast adds.
It speaks enough of the Boardcast protocol for the bench workers (welcome, join, cmd, ping).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import deque
from typing import Any

import msgspec
import uvloop
from aiohttp import WSMsgType, web

from bench.common import MSGPACK_PROTOCOL

MAX_MESSAGES_PER_FRAME = 512
AUTHOR = "00000000-0000-4000-8000-000000000001"
_ids = itertools.count(1)
_encode = msgspec.msgpack.Encoder().encode


class In(msgspec.Struct):
    type: str
    rid: str | None = None
    board_id: str | None = None
    op: dict[str, Any] | None = None


_decode = msgspec.msgpack.Decoder(In).decode


def batch(encoded: list[bytes]) -> bytes:
    n = len(encoded)
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(encoded)


class Conn:
    def __init__(self, ws: web.WebSocketResponse, queue_limit: int) -> None:
        self.ws = ws
        self.out: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.open = True
        self.limit = queue_limit

    def send(self, data: bytes) -> None:
        if not self.open:
            return
        if len(self.out) >= self.limit:
            self.open = False  # slow consumer: the writer closes the socket
            self.out.clear()
        else:
            self.out.append(data)
        self.ready.set()

    async def writer(self) -> None:
        ws, out = self.ws, self.out
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                while out:
                    n = min(len(out), MAX_MESSAGES_PER_FRAME)
                    data = out.popleft() if n == 1 else batch([out.popleft() for _ in range(n)])
                    await ws.send_frame(data, WSMsgType.BINARY)
                if not self.open:
                    await ws.close(code=4008, message=b"slow consumer")
                    return
        except ConnectionError:
            self.open = False


class Boards:
    def __init__(self) -> None:
        self.subs: dict[str, dict[int, Conn]] = {}
        self.seq: dict[str, int] = {}


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    boards: Boards = request.app["boards"]
    ws = web.WebSocketResponse(protocols=(MSGPACK_PROTOCOL,), compress=False, max_msg_size=65536)
    await ws.prepare(request)
    conn_id = next(_ids)
    conn = Conn(ws, request.app["queue"])
    writer = asyncio.create_task(conn.writer())
    joined: list[str] = []
    conn.send(
        _encode(
            {
                "type": "welcome",
                "conn_id": f"baseline-{conn_id}",
                "user_id": AUTHOR,
                "heartbeat_s": 20.0,
                "max_frame_bytes": 65536,
                "protocol": "boardcast.v1",
            }
        )
    )
    try:
        async for frame in ws:
            if frame.type is not WSMsgType.BINARY:
                continue
            msg = _decode(frame.data)
            board = msg.board_id or ""
            if msg.type == "cmd" and msg.op is not None:
                seq = boards.seq[board] = boards.seq.get(board, 0) + 1
                conn.send(_encode({"type": "ack", "rid": msg.rid, "board_id": board, "seq": seq}))
                op = msg.op
                if op.get("op") == "card.move":
                    ev: dict[str, Any] = {
                        "kind": "card.moved",
                        "card_id": op.get("card_id"),
                        "column_id": op.get("column_id"),
                        "rank": seq << 32,
                    }
                else:
                    ev = {"kind": "card.updated", "card_id": op.get("card_id"), "title": op.get("title")}
                data = _encode(
                    {
                        "type": "event",
                        "board_id": board,
                        "seq": seq,
                        "author": AUTHOR,
                        "ts_ms": int(time.time() * 1000),
                        "event": ev,
                        "rid": msg.rid,
                    }
                )
                for sub in boards.subs.get(board, {}).values():
                    sub.send(data)
            elif msg.type == "join":
                boards.subs.setdefault(board, {})[conn_id] = conn
                joined.append(board)
                seq = boards.seq.get(board, 0)
                snapshot = {
                    "id": board,
                    "title": "",
                    "description": "",
                    "seq": seq,
                    "columns": [],
                    "cards": [],
                }
                conn.send(
                    _encode(
                        {
                            "type": "joined",
                            "rid": msg.rid,
                            "board_id": board,
                            "seq": seq,
                            "snapshot": snapshot,
                            "viewers": [],
                        }
                    )
                )
            elif msg.type == "ping":
                conn.send(_encode({"type": "pong", "rid": msg.rid}))
    finally:
        for board in joined:
            boards.subs.get(board, {}).pop(conn_id, None)
        conn.open = False
        conn.ready.set()
        writer.cancel()
    return ws


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "baseline": True})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--outbound-queue", type=int, default=8192)
    args = parser.parse_args()
    app = web.Application()
    app["boards"] = Boards()
    app["queue"] = args.outbound_queue
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/health", health)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=2,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
