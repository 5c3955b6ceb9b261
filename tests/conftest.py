"""Shared fixtures: a real PostgreSQL database and Redis per test session, real servers on
127.0.0.1 per test, and real WebSocket clients."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web

from server.app import create_app
from server.config import Rate, Settings
from tests.rediscluster import redis_cluster
from tests.services import postgres_database, redis_server
from tests.wsclient import WsClient

ENCODINGS = ("msgpack", "json")


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(services_dir: Path) -> Iterator[str]:
    with redis_server(services_dir / "redis") as url:
        yield url


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test session's own; its keys are deleted at the end."""
    prefix = f"bctest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster_nodes(services_dir: Path) -> Iterator[list[tuple[str, int]]]:
    """A real local three-master Redis Cluster (tests/rediscluster.py), as (host, port)s."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on PATH to start a local Redis Cluster")
    with redis_cluster(services_dir / "redis-cluster") as nodes:
        yield nodes


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    """The realtime-core tests run in development mode (no auth, no REST rate limits); the
    identity and rate limit tests start servers with ``auth="jwt"`` / ``rate_limit=True``."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        log_level="warning",
        auth="none",
        rate_limit=False,
        rate_ws_commands=Rate(1_000_000, 1),  # the core tests pipeline thousands of commands
        redis_prefix=redis_prefix,
        password_hash_profile="fast",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class RunningServer:
    runner: web.AppRunner
    base: str
    app: web.Application

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/ws"

    async def stop(self) -> None:
        await self.runner.cleanup()


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server(settings: Settings) -> AsyncIterator[ServerFactory]:
    """Start real servers on 127.0.0.1 (settings overridable); all stopped at the end."""
    started: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        s = dataclasses.replace(settings, port=free_port(), **overrides)
        app = create_app(s)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", s.port)
        await site.start()
        srv = RunningServer(runner, f"http://127.0.0.1:{s.port}", app)
        started.append(srv)
        return srv

    yield start
    for srv in reversed(started):
        await srv.stop()


@pytest.fixture
async def server(start_server: ServerFactory) -> RunningServer:
    return await start_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def connect(
    http: aiohttp.ClientSession, server: RunningServer
) -> AsyncIterator[Callable[..., Awaitable[WsClient]]]:
    clients: list[WsClient] = []

    async def make(encoding: str = "msgpack", url: str | None = None, **kw: Any) -> WsClient:
        c = await WsClient.connect(http, url or server.ws_url, encoding, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def create_board(http: aiohttp.ClientSession, base: str, title: str = "Test board") -> dict[str, Any]:
    async with http.post(f"{base}/api/v1/boards", json={"title": title}) as r:
        assert r.status == 201, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def create_column(
    http: aiohttp.ClientSession, base: str, board_id: str, title: str = "Todo"
) -> dict[str, Any]:
    async with http.post(f"{base}/api/v1/boards/{board_id}/columns", json={"title": title}) as r:
        assert r.status == 201, await r.text()
        body: dict[str, Any] = await r.json()
        return body


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto) on 127.0.0.1 for this test session."""
    from tests.s3server import moto_server

    with moto_server() as url:
        yield url
