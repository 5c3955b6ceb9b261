"""What operators and orchestrators ask a node: /health (the full report), /health/live and
/health/ready (the probe pair), /metrics (Prometheus or OpenMetrics), and the REST latency
histogram's middleware."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from server.http import json_response
from server.keys import (
    AUTH,
    BLOBS,
    CONNECTIONS,
    GUARD,
    METRICS,
    POOL,
    REDIS,
    REGISTRY,
    WEBHOOK_REPO,
    WEBHOOKS,
)
from server.node import node_report

log = structlog.get_logger(__name__)
_PROBE_TIMEOUT_S = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _probe(report: dict[str, object], name: str, check: Callable[[], Awaitable[object]]) -> bool:
    """Run one dependency check into ``report[name]``; True when it answered in time."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await check()
    except Exception as e:
        report[name] = {"ok": False, "error": type(e).__name__}
        log.warning("health_check_failed", dependency=name, error=repr(e))
        return False
    report[name] = {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
    return True


def _postgres(app: web.Application) -> Callable[[], Awaitable[object]]:
    return lambda: app[POOL].fetchval("SELECT 1")


def health_handler(version: str) -> Handler:
    async def health(request: web.Request) -> web.Response:
        """200 while the node can serve: PostgreSQL answers. Redis holds only the rate limits,
        and the node keeps serving without it (fail open), so a Redis outage is reported as
        "degraded" with 200: a readiness probe must not take every node out of rotation at once
        for it."""
        app = request.app
        report: dict[str, object] = {"status": "ok", "version": version}
        postgres = await _probe(report, "postgres", _postgres(app))
        redis = await _probe(report, "redis", lambda: app[REDIS].ping())  # type: ignore[misc]
        blobs = await _probe(report, "blob_store", app[BLOBS].check)
        if not blobs:
            app[METRICS].blob_failures.labels(op="check").inc()
        limiter = await app[GUARD].probe()
        report["rate_limiter"] = limiter
        oidc = app[AUTH].oidc
        if oidc is not None:
            report["oidc"] = oidc.health()
        report["boards_active"] = len(app[REGISTRY])
        report["connections"] = len(app[CONNECTIONS])
        # the bus's own view of Redis (its last call), beside the probe's ping above
        report["node"] = node_report(app[REGISTRY])
        if postgres:
            await _webhooks(app, report)
        if not (postgres and redis and blobs and limiter["ok"]):
            report["status"] = "degraded"
        return json_response(report, 200 if postgres else 503)

    return health


async def _webhooks(app: web.Application, report: dict[str, object]) -> None:
    """The webhook backlog (every node's: it is in PostgreSQL), and whether this node delivers."""
    dispatcher = app[WEBHOOKS]
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            backlog = await app[WEBHOOK_REPO].backlog()
    except Exception as e:
        log.warning("health_check_failed", dependency="webhooks", error=repr(e))
        return
    report["webhooks"] = {
        "dispatching": dispatcher is not None,
        "in_flight": 0 if dispatcher is None else dispatcher.in_flight,
        "behind": backlog.behind,
        "events_behind": backlog.events_behind,
        "disabled": backlog.disabled,
    }


async def health_live(request: web.Request) -> web.Response:
    """Liveness: the process answers HTTP. No dependency is checked, on purpose: a PostgreSQL
    outage must not get every node restarted (which would not bring PostgreSQL back)."""
    return json_response({"status": "ok"})


async def health_ready(request: web.Request) -> web.Response:
    """Readiness: 200 while this node can serve requests (PostgreSQL answers), 503 while it
    cannot, so the load balancer sends traffic elsewhere. Redis is not part of it, as for
    /health: without it the node serves, with rate limits failing open."""
    report: dict[str, object] = {"status": "ready"}
    if not await _probe(report, "postgres", _postgres(request.app)):
        report["status"] = "unavailable"
        return json_response(report, 503)
    return json_response(report)


async def metrics_handler(request: web.Request) -> web.Response:
    """The text format by default; OpenMetrics for a scraper that asks for it (Prometheus
    does, in its Accept header)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[METRICS].registry), headers={"Content-Type": content_type})


@web.middleware
async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """REST latency by route template (never the raw path: ids would make a series each) and
    status class. Outermost, so error answers count too. WebSocket sessions are not requests
    to time: they have their own metrics."""
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as e:  # a redirect the error middleware lets through
        status = e.status
        raise
    finally:
        if status != 101:
            resource = request.match_info.route.resource
            request.app[METRICS].http_latency.labels(
                method=request.method,
                route=resource.canonical if resource is not None else "unmatched",
                status=f"{status // 100}xx",
            ).observe(time.perf_counter() - t0)
