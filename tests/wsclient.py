"""A small real WebSocket client for tests and examples: both encodings, batched frames."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

_rid = itertools.count(1)


def new_rid() -> str:
    return f"r{next(_rid)}-{uuid.uuid4().hex[:6]}"


class WsClient:
    """Receives on a background task into a queue of decoded messages (plain dicts)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.log: list[dict[str, Any]] = []  # every message received, in order
        self._arrived = asyncio.Event()
        self.frames = 0
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._recv_loop())
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, url: str, encoding: str = "msgpack", **kw: Any
    ) -> WsClient:
        ws = await session.ws_connect(url, protocols=(f"boardcast.v1.{encoding}",), **kw)
        client = cls(ws, encoding)
        client.welcome = await client.expect("welcome")
        return client

    def encode(self, msg: dict[str, Any]) -> bytes:
        if self.encoding == "msgpack":
            return msgspec.msgpack.encode(msg)
        return msgspec.json.encode(msg)

    async def send(self, msg: dict[str, Any]) -> None:
        data = self.encode(msg)
        if self.encoding == "msgpack":
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data.decode())

    async def send_raw(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def _recv_loop(self) -> None:
        try:
            async for frame in self.ws:
                if frame.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    self.frames += 1
                    raw = frame.data
                    decoded = (
                        msgspec.msgpack.decode(raw)
                        if self.encoding == "msgpack"
                        else msgspec.json.decode(raw)
                    )
                    for m in decoded if isinstance(decoded, list) else [decoded]:
                        self.log.append(m)
                        self.inbox.put_nowait(m)
                    self._arrived.set()
        finally:
            self.closed.set()
            self._arrived.set()

    async def expect(
        self, type_: str, pred: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 10
    ) -> dict[str, Any]:
        """The next message of this type (matching pred); other messages are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                m = await self.inbox.get()
                if m.get("type") == type_ and (pred is None or pred(m)):
                    return m

    async def request(self, msg: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Send a message with a fresh rid; return the ack/joined/left/error naming it."""
        rid = msg.setdefault("rid", new_rid())
        await self.send(msg)
        async with asyncio.timeout(timeout):
            while True:
                m = await self.inbox.get()
                if m.get("rid") == rid and m.get("type") in ("ack", "joined", "left", "error", "pong"):
                    return m

    async def join(self, board_id: str, since_seq: int | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "join", "board_id": board_id}
        if since_seq is not None:
            msg["since_seq"] = since_seq
        return await self.request(msg)

    async def cmd(self, board_id: str, op: dict[str, Any], rid: str | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "cmd", "board_id": board_id, "op": op}
        if rid is not None:
            msg["rid"] = rid
        return await self.request(msg)

    def events(self, board_id: str) -> list[dict[str, Any]]:
        return [m for m in self.log if m.get("type") == "event" and str(m["board_id"]) == board_id]

    async def wait_seq(self, board_id: str, seq: int, timeout: float = 20) -> list[dict[str, Any]]:
        """Wait until an event with this seq (or later) of the board has arrived."""
        async with asyncio.timeout(timeout):
            while True:
                evs = self.events(board_id)
                if evs and evs[-1]["seq"] >= seq:
                    return evs
                if self.closed.is_set():
                    raise ConnectionError("socket closed while waiting for events")
                self._arrived.clear()
                await self._arrived.wait()

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    # ------------------------------------------------------------------ pipelining helpers

    async def send_cmd(self, board_id: str, op: dict[str, Any], rid: str | None = None) -> str:
        """Send a command without waiting for its answer; returns its rid."""
        rid = rid or new_rid()
        await self.send({"type": "cmd", "rid": rid, "board_id": board_id, "op": op})
        return rid

    async def wait_until(
        self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 20, what: str = "condition"
    ) -> None:
        """Wait until ``pred(self.log)`` holds; fails if the socket closes first."""
        async with asyncio.timeout(timeout):
            while not pred(self.log):
                if self.closed.is_set():
                    raise ConnectionError(f"socket closed while waiting for {what}")
                self._arrived.clear()
                await self._arrived.wait()

    def answers(self, rid: str) -> list[dict[str, Any]]:
        """Every ack or error received for this rid."""
        return [m for m in self.log if m.get("rid") == rid and m.get("type") in ("ack", "error")]

    async def wait_answers(self, rids: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
        """Wait for an ack or error naming each rid; returns the first answer per rid."""
        await self.wait_until(
            lambda _: all(self.answers(r) for r in rids), timeout, f"answers to {len(rids)} requests"
        )
        return {r: self.answers(r)[0] for r in rids}

    async def error_after(self, data: bytes | str) -> dict[str, Any]:
        """Send a raw frame and return the one error frame it is answered with."""
        before = len(self.log)
        await self.send_raw(data)
        await self.wait_until(lambda log: any(m["type"] == "error" for m in log[before:]), what="an error")
        errors = [m for m in self.log[before:] if m["type"] == "error"]
        assert len(errors) == 1, errors
        return errors[0]

    async def ping(self, timeout: float = 10) -> dict[str, Any]:
        """A round trip: every frame the server queued for us before the pong has arrived."""
        pong = await self.request({"type": "ping", "rid": new_rid()}, timeout)
        assert pong["type"] == "pong", pong
        return pong
