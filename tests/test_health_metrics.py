"""/health reports its dependencies and live counts, /health/live and /health/ready are the
probe pair; /metrics is Prometheus text (or OpenMetrics when asked) whose values move with what
the server does, with the process and Python runtime collectors and a REST latency histogram.

In-process app tests use pytest-aiohttp's ``aiohttp_client``; the WebSocket ones a real server
(``start_server``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.config import Settings
from tests.conftest import create_board, create_column

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

EXPECTED_FAMILIES = {
    # family name as the parser reports it -> type
    "boardcast_ws_connections": "gauge",
    "boardcast_ws_frames_in": "counter",
    "boardcast_ws_frames_out": "counter",
    "boardcast_commands": "counter",
    "boardcast_command_latency_seconds": "histogram",
    "boardcast_commit_batch_size": "histogram",
    "boardcast_commit_latency_seconds": "histogram",
    "boardcast_mailbox_depth": "histogram",
    "boardcast_join_run_size": "histogram",
    "boardcast_active_boards": "gauge",
}


async def health(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base}/health") as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def scrape(
    http: aiohttp.ClientSession, base: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics keyed by (sample name, sorted labels)."""
    async with http.get(f"{base}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait for a condition the server reaches on its own after the client is done (a socket's
    teardown, an actor stopping): re-checked after each round trip to the server (no sleeps),
    bounded by a deadline."""
    async with asyncio.timeout(timeout):
        while not await check():
            pass


# ------------------------------------------------------------------ /health


async def test_health_is_200_with_every_dependency_up(http, server, connect):
    status, body = await health(http, server.base)
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["postgres"]["ok"] is True and body["redis"]["ok"] is True
    assert body["postgres"]["latency_ms"] >= 0 and body["redis"]["latency_ms"] >= 0
    assert body["boards_active"] == 0 and body["connections"] == 0

    board = await create_board(http, server.base)
    client = await connect("json")
    await client.join(board["id"])
    status, body = await health(http, server.base)
    assert status == 200
    assert body["boards_active"] == 1
    assert body["connections"] == 1

    await client.close()

    async def no_connections() -> bool:
        return (await health(http, server.base))[1]["connections"] == 0

    await eventually(no_connections)


async def test_health_is_200_degraded_when_redis_is_unreachable_and_rest_still_works(http, start_server):
    # Redis only holds the rate limits, and the server keeps serving without it: a readiness
    # probe must not take every node out of the load balancer during a Redis outage.
    srv = await start_server(redis_url=UNREACHABLE_REDIS, rate_limit=True)
    status, body = await health(http, srv.base)
    assert status == 200, body
    assert body["status"] == "degraded"
    assert body["redis"]["ok"] is False and body["redis"]["error"]
    assert body["rate_limiter"]["ok"] is False and body["rate_limiter"]["enabled"] is True
    assert body["postgres"]["ok"] is True
    assert body["boards_active"] == 0 and body["connections"] == 0

    board = await create_board(http, srv.base, "without redis")
    col = await create_column(http, srv.base, board["id"])
    async with http.get(f"{srv.base}/api/v1/boards/{board['id']}") as r:
        assert r.status == 200
        assert [c["id"] for c in (await r.json())["columns"]] == [col["id"]]


class TcpRelay:
    """A TCP relay on 127.0.0.1 to one address (host and port, or a Unix socket path), that
    can be cut: open connections dropped, new ones refused, as when the server goes away."""

    def __init__(self, host: str, port: int, unix_path: str | None) -> None:
        self._target = (host, port, unix_path)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port, unix_path = self._target
        if unix_path is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(unix_path)
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()


def _postgres_socket(socket_dir: str) -> str:
    (socket,) = (p for p in Path(socket_dir).glob(".s.PGSQL.*") if p.suffix != ".lock")
    return str(socket)


@contextlib.asynccontextmanager
async def relayed_postgres(database_url: str) -> AsyncIterator[tuple[str, TcpRelay]]:
    """The test database's URL rewritten to go through a :class:`TcpRelay`."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    socket_dir = query.pop("host", [None])[0]  # embedded PostgreSQL listens on a Unix socket
    port = parts.port or 5432
    unix_path = _postgres_socket(socket_dir) if socket_dir else None
    relay = TcpRelay(parts.hostname or "127.0.0.1", port, unix_path)
    relay_port = await relay.start()
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{relay_port}" if user else f"127.0.0.1:{relay_port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, doseq=True), ""))
    try:
        yield url, relay
    finally:
        await relay.cut()


async def test_health_is_503_when_postgres_is_unreachable(http, start_server, database_url):
    async with relayed_postgres(database_url) as (url, relay):
        srv = await start_server(database_url=url, rate_limit=True)
        status, body = await health(http, srv.base)
        assert status == 200 and body["status"] == "ok", body

        await relay.cut()
        status, body = await health(http, srv.base)
        assert status == 503, body
        assert body["status"] == "degraded"
        assert body["postgres"]["ok"] is False and body["postgres"]["error"]
        assert body["redis"]["ok"] is True and body["rate_limiter"]["ok"] is True


# ------------------------------------------------------------------ /metrics


async def test_metrics_exposes_every_family_with_its_type(http, server):
    async with http.get(f"{server.base}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind in EXPECTED_FAMILIES.items():
        assert families.get(name) == kind, (name, families.get(name))
    samples = await scrape(http, server.base)
    assert value(samples, "boardcast_ws_connections") == 0
    assert value(samples, "boardcast_active_boards") == 0


async def test_connection_gauge_and_frame_counters_follow_a_websocket(http, server, connect):
    base = server.base
    before = await scrape(http, base)
    assert value(before, "boardcast_ws_connections") == 0

    client = await connect("json")
    board = await create_board(http, base)
    await client.join(board["id"])
    during = await scrape(http, base)
    assert value(during, "boardcast_ws_connections") == 1
    # welcome and joined went out; the join came in
    assert value(during, "boardcast_ws_frames_in_total", encoding="json") == 1
    assert value(during, "boardcast_ws_frames_out_total", encoding="json") >= 2
    assert value(during, "boardcast_ws_frames_in_total", encoding="msgpack") == 0

    await client.cmd(board["id"], {"op": "column.create", "title": "x"})
    after_cmd = await scrape(http, base)
    assert value(after_cmd, "boardcast_ws_frames_in_total", encoding="json") == 2
    assert value(after_cmd, "boardcast_ws_frames_out_total", encoding="json") > value(
        during, "boardcast_ws_frames_out_total", encoding="json"
    )

    await client.close()

    async def closed() -> bool:
        return value(await scrape(http, base), "boardcast_ws_connections") == 0

    await eventually(closed)


async def test_command_counters_and_histograms_move(http, server, connect):
    base = server.base
    board = await create_board(http, base)
    before = await scrape(http, base)
    assert value(before, "boardcast_active_boards") == 0

    client = await connect("msgpack")
    await client.join(board["id"])
    ack = await client.cmd(board["id"], {"op": "column.create", "title": "ws"})
    assert ack["type"] == "ack"
    err = await client.cmd(board["id"], {"op": "column.update", "column_id": board["id"], "title": "t"})
    assert err["type"] == "error" and err["code"] == "not_found"
    await create_column(http, base, board["id"], "rest")

    after = await scrape(http, base)
    ok = value(after, "boardcast_commands_total", op="column.create", outcome="ok")
    assert ok - value(before, "boardcast_commands_total", op="column.create", outcome="ok") == 2
    refused = value(after, "boardcast_commands_total", op="column.update", outcome="not_found")
    assert refused == 1
    assert value(after, "boardcast_active_boards") == 1
    for hist, moved_by in [
        ("boardcast_command_latency_seconds", 2),  # both accepted commands, REST and WebSocket
        ("boardcast_commit_batch_size", 2),
        ("boardcast_commit_latency_seconds", 2),
    ]:
        count = value(after, f"{hist}_count") - value(before, f"{hist}_count")
        assert count == moved_by, (hist, count)
        assert value(after, f"{hist}_sum") > value(before, f"{hist}_sum")
    assert (
        value(after, "boardcast_commit_batch_size_sum") - value(before, "boardcast_commit_batch_size_sum")
        == 2
    )
    assert value(after, "boardcast_mailbox_depth_count") > value(before, "boardcast_mailbox_depth_count")
    # the +Inf bucket holds every observation
    assert value(after, "boardcast_commit_latency_seconds_bucket", le="+Inf") == value(
        after, "boardcast_commit_latency_seconds_count"
    )

    # deleting the board stops its actor: the gauge goes back down
    async with http.delete(f"{base}/api/v1/boards/{board['id']}") as r:
        assert r.status == 204

    async def no_boards() -> bool:
        return value(await scrape(http, base), "boardcast_active_boards") == 0

    await eventually(no_boards)


# ------------------------------------------------------------------ probes and exposition
# In-process: the app under pytest-aiohttp's test client (a real server on 127.0.0.1).


async def test_live_and_ready_answer_200_while_postgres_answers(aiohttp_client, settings: Settings):
    client = await aiohttp_client(create_app(settings))
    r = await client.get("/health/live")
    assert r.status == 200 and await r.json() == {"status": "ok"}
    r = await client.get("/health/ready")
    body = await r.json()
    assert r.status == 200 and body["status"] == "ready" and body["postgres"]["ok"] is True, body


async def test_ready_is_503_and_live_200_when_postgres_is_unreachable(
    aiohttp_client, settings: Settings, database_url: str
):
    async with relayed_postgres(database_url) as (url, relay):
        client = await aiohttp_client(create_app(dataclasses.replace(settings, database_url=url)))
        assert (await client.get("/health/ready")).status == 200
        await relay.cut()
        r = await client.get("/health/ready")
        body = await r.json()
        assert r.status == 503, body
        assert body["status"] == "unavailable" and body["postgres"]["ok"] is False, body
        # alive all the same: restarting the node would not bring PostgreSQL back
        r = await client.get("/health/live")
        assert r.status == 200 and await r.json() == {"status": "ok"}
        # and /health keeps its full report
        r = await client.get("/health")
        assert r.status == 503 and (await r.json())["redis"]["ok"] is True


async def test_the_probes_are_not_rate_limited(aiohttp_client, settings: Settings):
    from server.config import Rate

    app = create_app(dataclasses.replace(settings, rate_limit=True, rate_reads=Rate(1, 60)))
    client = await aiohttp_client(app)
    for _ in range(3):
        assert (await client.get("/health/live")).status == 200
        assert (await client.get("/health/ready")).status == 200


async def test_metrics_have_process_and_python_series_and_no_created(aiohttp_client, settings: Settings):
    client = await aiohttp_client(create_app(settings))
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = await r.text()
    assert "# EOF" not in text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_objects_collected_total",
    ):
        assert name in names, name
    assert not [n for n in names if n.endswith("_created")]
    assert "_created" not in text


async def test_metrics_answer_openmetrics_when_the_scraper_asks(aiohttp_client, settings: Settings):
    client = await aiohttp_client(create_app(settings))
    # what Prometheus sends
    accept = (
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;"
        "q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )
    r = await client.get("/metrics", headers={"Accept": accept})
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/openmetrics-text;")
    text = await r.text()
    assert text.endswith("# EOF\n")
    families = {f.name: f.type for f in openmetrics_families(text)}
    assert families["boardcast_commands"] == "counter"
    assert families["boardcast_http_request_duration_seconds"] == "histogram"
    assert families["process_cpu_seconds"] == "counter"
    assert "_created" not in text
    r = await client.get("/metrics", headers={"Accept": "text/plain"})
    assert r.headers["Content-Type"].startswith("text/plain") and "# EOF" not in await r.text()


async def test_rest_latency_is_labelled_by_route_template_and_status_class(
    aiohttp_client, settings: Settings
):
    client = await aiohttp_client(create_app(settings))
    r = await client.post("/api/v1/boards", json={"title": "timed"})
    assert r.status == 201
    board_id = (await r.json())["id"]
    for _ in range(2):
        assert (await client.get(f"/api/v1/boards/{board_id}")).status == 200
    assert (await client.get("/api/v1/boards/00000000-0000-4000-8000-00000000dead")).status == 404
    assert (await client.get("/no/such/path")).status == 404
    async with client.get("/metrics") as r:
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(await r.text())
            for s in f.samples
        }
    name = "boardcast_http_request_duration_seconds_count"
    board = "/api/v1/boards/{board_id}"
    assert value(samples, name, method="GET", route=board, status="2xx") == 2
    assert value(samples, name, method="GET", route=board, status="4xx") == 1
    assert value(samples, name, method="POST", route="/api/v1/boards", status="2xx") == 1
    assert value(samples, name, method="GET", route="unmatched", status="4xx") == 1
    # never a raw path
    assert not [labels for (n, labels) in samples if n == name and board_id in str(labels)]
    assert (
        value(
            samples,
            "boardcast_http_request_duration_seconds_bucket",
            method="GET",
            route=board,
            status="2xx",
            le="+Inf",
        )
        == 2
    )
