"""The app factory: routes, middleware and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from actors import BoardRegistry, BoardSettings, Metrics, make_board_factory
from protocol.errors import HTTP_STATUS, BoardcastError, CloseCode, ErrorCode
from server.access import DEV_USER, resolve_user
from server.config import Settings
from server.keys import CONNECTIONS, METRICS, POOL, REDIS, REGISTRY, REPO, SETTINGS
from server.openapi import build_openapi
from server.rest import ROUTES, ErrorBody, ErrorDetail, json_response
from server.ws import Connection, LiveConnections, negotiate
from storage import BoardRepo, create_pool, migrate

VERSION = "0.1.0"
log = structlog.get_logger(__name__)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.BAD_REQUEST, 413: ErrorCode.TOO_LARGE}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(
    code: ErrorCode,
    message: str,
    request_id: str,
    details: dict[str, object] | None = None,
    status: int | None = None,
) -> web.Response:
    body = ErrorBody(ErrorDetail(code=code, message=message, request_id=request_id, details=details))
    return json_response(body, status or HTTP_STATUS[code])


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    metrics = request.app[METRICS]
    try:
        resp = await handler(request)
    except BoardcastError as e:
        resp = _error_response(e.code, e.message, request_id, e.details)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, ErrorCode.BAD_REQUEST if e.status < 500 else ErrorCode.INTERNAL)
        resp = _error_response(code, e.reason, request_id, status=e.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        resp = _error_response(ErrorCode.INTERNAL, "internal error", request_id)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if not resp.prepared:
        resp.headers["X-Request-Id"] = request_id
    metrics.http_requests.labels(method=request.method, status=str(resp.status)).inc()
    return resp


async def ws_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    user = resolve_user(request)
    ws, codec = await negotiate(request, settings)
    if codec is None:
        await ws.close(
            code=CloseCode.UNSUPPORTED_PROTOCOL,
            message=b"offer subprotocol boardcast.v1.msgpack or boardcast.v1.json",
        )
        return ws
    transport = request.transport
    if transport is None:  # the peer went away during the handshake
        return ws
    conn = Connection(
        ws, transport, codec, user, app[REGISTRY], app[REPO], app[METRICS], settings, app[CONNECTIONS]
    )
    await conn.run()
    return ws


async def health(request: web.Request) -> web.Response:
    app = request.app
    report: dict[str, object] = {"status": "ok", "version": VERSION}
    ok = True

    async def probe(name: str, check: Callable[[], Awaitable[object]]) -> None:
        nonlocal ok
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(2):
                await check()
            report[name] = {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
        except Exception as e:
            ok = False
            report[name] = {"ok": False, "error": type(e).__name__}
            log.warning("health_check_failed", dependency=name, error=repr(e))

    await probe("postgres", lambda: app[POOL].fetchval("SELECT 1"))
    await probe("redis", lambda: app[REDIS].ping())  # type: ignore[misc]
    report["boards_active"] = len(app[REGISTRY])
    report["connections"] = len(app[CONNECTIONS])
    if not ok:
        report["status"] = "degraded"
    return json_response(report, 200 if ok else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_handler(request: web.Request) -> web.Response:
    return json_response(build_openapi(VERSION))


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url and settings.redis_url, "URLs are resolved before the app is built"
    pool = await create_pool(settings.database_url, 1, settings.db_pool_max)
    redis = aioredis.from_url(settings.redis_url)  # type: ignore[no-untyped-call]
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        repo = BoardRepo(pool)
        await repo.ensure_user(DEV_USER.id, DEV_USER.name, DEV_USER.email)
        app[POOL], app[REDIS], app[REPO] = pool, redis, repo
        yield
    finally:
        await redis.aclose()
        await pool.close()


async def _actors(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    board = BoardSettings(
        recent_events=s.recent_events,
        max_resume_events=s.max_resume_events,
        idle_passivate_s=s.passivate_s,
    )
    registry = BoardRegistry(make_board_factory(app[REPO], app[METRICS], board), app[METRICS])
    app[REGISTRY] = registry
    live = app[CONNECTIONS] = LiveConnections(s.heartbeat_s)
    live.start()
    yield
    await live.stop()
    await registry.close()


async def _close_sockets(app: web.Application) -> None:
    await app[CONNECTIONS].close_all()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_actors)
    app.on_shutdown.append(_close_sockets)
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    return app
