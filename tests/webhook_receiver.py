"""A real webhook receiver for tests: an aiohttp server on 127.0.0.1 that checks each
delivery's signature with its own HMAC code (not the server's), answers the statuses a test
scripts, and records what arrived."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.conftest import free_port

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
# What the webhook tests run servers with: deliveries to the receiver on 127.0.0.1 allowed
# (and nothing else internal), fast polls and backoff.
FAST: dict[str, Any] = {
    "webhook_allowed_networks": LOOPBACK,
    "webhook_poll_s": 0.05,
    "webhook_backoff_base_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "webhook_timeout_s": 2.0,
    "webhook_lease_s": 5.0,
}


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    signature_ok: bool
    status: int  # what the receiver answered


class Receiver:
    def __init__(self) -> None:
        self.secret: str | None = None
        self.script: list[int] = []  # statuses to answer, in order; then `default`
        self.default = 200
        self.received: list[Received] = []
        self.url = ""
        self.before: Callable[[web.Request], Awaitable[None]] | None = None  # runs first, per request
        self._arrived = asyncio.Condition()

    def verify(self, header: str, raw: bytes) -> bool:
        """The documented check (docs/WEBHOOKS.md), written out independently."""
        if self.secret is None:
            return False
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        try:
            ts = int(fields["t"])
        except (KeyError, ValueError):
            return False
        expected = hmac.new(self.secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        return abs(time.time() - ts) < 300 and hmac.compare_digest(expected, fields.get("v1", ""))

    async def handle(self, request: web.Request) -> web.Response:
        if self.before is not None:
            await self.before(request)
        raw = await request.read()
        status = self.script.pop(0) if self.script else self.default
        item = Received(
            dict(request.headers),
            json.loads(raw),
            raw,
            self.verify(request.headers.get("Boardcast-Signature", ""), raw),
            status,
        )
        async with self._arrived:
            self.received.append(item)
            self._arrived.notify_all()
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    async def wait_for(self, count: int, timeout_s: float = 20) -> list[Received]:
        """Until ``count`` deliveries (attempts) have arrived."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    def delivered(self) -> list[Received]:
        """Attempts the receiver accepted (2xx)."""
        return [r for r in self.received if 200 <= r.status < 300]


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def create_webhook(
    http: aiohttp.ClientSession,
    base: str,
    board_id: str,
    url: str,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    async with http.post(
        f"{base}/api/v1/boards/{board_id}/webhooks", json={"url": url, **body}, headers=headers or {}
    ) as r:
        assert r.status == 201, await r.text()
        created: dict[str, Any] = await r.json()
        return created


async def get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Any:
    async with http.get(url, headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def wait_until(check: Any, timeout_s: float = 20, every_s: float = 0.02) -> Any:
    """Poll an async predicate (for state in the database, which has no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(every_s)


@pytest.fixture(autouse=True)
async def no_webhooks_left(database_url: str) -> AsyncIterator[None]:
    """Import into each webhook test module: deletes the webhooks a test made, so that servers
    of later tests in the session (each runs a dispatcher) do not keep delivering them."""
    yield
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM webhooks")
    finally:
        await conn.close()
