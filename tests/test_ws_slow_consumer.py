"""A slow consumer is closed with 4000 and resumes; nobody else is slowed down.

The slow client is a hand-made WebSocket client on a raw, non-blocking socket with a tiny
receive buffer: after joining it simply stops calling recv, so the kernel buffers fill, the
server's writer blocks on drain and the connection's outbound queue overflows. (An aiohttp
client would keep reading in its own task.)
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

import msgspec

from server.keys import METRICS
from tests.boardmodel import BoardModel, normalise_snapshot, rest_snapshot
from tests.conftest import create_board, create_column
from tests.wsclient import WsClient

_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class RawWsClient:
    """The bare minimum of RFC 6455 over a socket that reads only when asked to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.eof = False

    @classmethod
    async def connect(cls, ws_url: str, rcvbuf: int = 4096) -> RawWsClient:
        url = urlsplit(ws_url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting, so the advertised TCP window stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (url.hostname, url.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: boardcast.v1.msgpack\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        client = cls(sock)
        while b"\r\n\r\n" not in client.buf:
            await client._recv_some()
        head, client.buf = client.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"boardcast.v1.msgpack" in head
        return client

    async def _recv_some(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            self.eof = True
            raise ConnectionError("server closed the socket")
        self.buf += data

    async def send(self, msg: dict[str, Any]) -> None:
        payload = msgspec.msgpack.encode(msg)
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | _OP_BINARY, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | _OP_BINARY, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | _OP_BINARY, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    def _parse_one(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        opcode, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
        assert buf[0] & 0x80, "the server does not fragment messages"
        if n == 126:
            if len(buf) < 4:
                return None
            (n,), pos = struct.unpack("!H", buf[2:4]), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,), pos = struct.unpack("!Q", buf[2:10]), 10
        if len(buf) < pos + n:
            return None
        self.buf = buf[pos + n :]
        return opcode, buf[pos : pos + n]

    async def read_until(self, pred) -> None:
        """Read frames (decoding data frames into ``messages``) until pred() holds or the
        server's close frame has been read."""
        while not pred() and self.close_code is None:
            frame = self._parse_one()
            if frame is None:
                await self._recv_some()
                continue
            opcode, payload = frame
            if opcode in (_OP_BINARY, _OP_TEXT):
                decoded = msgspec.msgpack.decode(payload)
                self.messages.extend(decoded if isinstance(decoded, list) else [decoded])
            elif opcode == _OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode()

    def close(self) -> None:
        self.sock.close()


WINDOW = 16
MAX_EVENTS = 2000  # 40 MB: far more than any socket buffers hold


async def _send_windowed(client: WsClient, bid: str, ops: list[dict[str, Any]], window: int) -> list[str]:
    """Send every op without waiting for answers, keeping at most ``window`` unanswered."""
    rids: list[str] = []
    for op in ops:
        if len(rids) >= window:
            await client.wait_answers([rids[-window]], timeout=60)
        rids.append(await client.send_cmd(bid, op))
    return rids


async def test_a_slow_consumer_is_closed_and_resumes_without_slowing_others(http, start_server, connect):
    srv = await start_server(outbound_buffer_bytes=64 * 1024)
    board = await create_board(http, srv.base, "Slow")
    bid = board["id"]
    col = (await create_column(http, srv.base, bid))["id"]
    created = await http.post(f"{srv.base}/api/v1/boards/{bid}/cards", json={"column_id": col, "title": "t"})
    card = (await created.json())["id"]
    created.release()

    slow = await RawWsClient.connect(srv.ws_url)
    try:
        await slow.send({"type": "join", "rid": "slow-join", "board_id": bid})
        await slow.read_until(lambda: any(m["type"] == "joined" for m in slow.messages))
        joined = next(m for m in slow.messages if m["type"] == "joined")
        start_seq = joined["seq"]
        # From here on the slow client reads nothing.

        writer = await connect("msgpack", url=srv.ws_url)
        viewer = await connect("json", url=srv.ws_url)
        await writer.join(bid)
        await viewer.join(bid)
        # 20 kB events, pipelined (at most WINDOW unanswered), until the server has given up
        # on the slow client: the kernel and transport buffers hide a few MB (the server's
        # send buffer is capped by net.ipv4.tcp_wmem), the queue overflows after that. Then
        # a few more windows, to show the others carry on.
        metrics = srv.app[METRICS].registry

        def slow_closed() -> float:
            return metrics.get_sample_value("boardcast_ws_closed_total", {"reason": "slow_consumer"}) or 0

        rids: list[str] = []
        extra = 3
        while extra:
            assert len(rids) < MAX_EVENTS, "the slow client's queue never overflowed"
            ops = [
                {"op": "card.update", "card_id": card, "description": f"{len(rids) + i:05d}" * 4000}
                for i in range(WINDOW)
            ]
            rids += await _send_windowed(writer, bid, ops, WINDOW)
            await writer.wait_answers(rids[-WINDOW:], timeout=30)
            if slow_closed():
                extra -= 1
        n = len(rids)
        answers = await writer.wait_answers(rids)
        assert all(a["type"] == "ack" for a in answers.values())
        final = start_seq + n
        assert sorted(a["seq"] for a in answers.values()) == list(range(start_seq + 1, final + 1))
        evs = await viewer.wait_seq(bid, final, timeout=60)
        assert [e["seq"] for e in evs] == list(range(start_seq + 1, final + 1))
        assert not viewer.closed.is_set() and not writer.closed.is_set()

        assert slow_closed() == 1, "only the slow client is a slow consumer"

        # The slow client finally reads: what was already on its way, then the close.
        await slow.read_until(lambda: False)
        assert slow.close_code == 4000, (slow.close_code, slow.close_reason)
        assert "slow consumer" in slow.close_reason
        got = [m["seq"] for m in slow.messages if m["type"] == "event"]
        assert got == list(range(start_seq + 1, start_seq + 1 + len(got))), "gap before the close"
        assert len(got) < n, "the slow client received everything: it was never slow"
        last = got[-1] if got else start_seq
    finally:
        slow.close()

    # It reconnects and resumes from its last seq: exactly the events it missed.
    again = await connect("msgpack", url=srv.ws_url)
    resumed = await again.join(bid, since_seq=last)
    assert [e["seq"] for e in resumed["events"]] == list(range(last + 1, final + 1))
    model = BoardModel(joined["snapshot"])
    model.apply_all([m for m in slow.messages if m["type"] == "event"])
    model.apply_all(resumed["events"])
    assert model.normalised() == normalise_snapshot(await rest_snapshot(http, srv.base, bid))
    assert model.cards[card]["description"] == f"{n - 1:05d}" * 4000


async def test_a_burst_of_pipelined_commands_does_not_close_healthy_connections(http, start_server, connect):
    """One client pipelining more commands than a connection's queue holds must not get
    itself or a viewer that keeps up closed as a slow consumer: one group commit's acks and
    events arrive at every queue at once, before any writer could run."""
    srv = await start_server(outbound_buffer_bytes=64 * 1024)
    board = await create_board(http, srv.base, "Burst")
    bid = board["id"]
    col = (await create_column(http, srv.base, bid))["id"]
    writer = await connect("msgpack", url=srv.ws_url)
    viewer = await connect("json", url=srv.ws_url)
    start_seq = (await writer.join(bid))["seq"]
    await viewer.join(bid)
    rids = [
        await writer.send_cmd(bid, {"op": "card.create", "column_id": col, "title": f"c{i}"})
        for i in range(200)
    ]
    answers = await writer.wait_answers(rids)
    assert all(a["type"] == "ack" for a in answers.values())
    for cl in (writer, viewer):
        evs = await cl.wait_seq(bid, start_seq + 200)
        assert [e["seq"] for e in evs] == list(range(start_seq + 1, start_seq + 201))
    metrics = srv.app[METRICS].registry
    assert not metrics.get_sample_value("boardcast_ws_closed_total", {"reason": "slow_consumer"})
