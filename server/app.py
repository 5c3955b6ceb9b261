"""The app factory: routes, middleware and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import functools
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.asyncio.cluster import RedisCluster

from actors import BoardRegistry, BoardSettings, Execute, Metrics, make_board_factory
from actors.lease import new_node_id
from jobs import Dispatcher, DispatcherSettings, GuardedResolver, TargetPolicy
from jobs.webhooks import WebhookMetrics
from protocol import commands
from protocol.errors import HTTP_STATUS, BoardcastError, CloseCode, ErrorCode
from server.access import DEV_USER, User, grants
from server.api import history, transfer
from server.auth import Authenticator
from server.blobs import blobs_context
from server.config import Settings
from server.guard import Guard, Tier, rate_headers
from server.http import ErrorBody, ErrorDetail, Route, json_response
from server.keys import (
    AUTH,
    CONNECTIONS,
    GUARD,
    IDENTITY,
    MEMBERS,
    METRICS,
    POOL,
    RATE,
    REDIS,
    REGISTRY,
    REPO,
    SETTINGS,
    USER,
    WEBHOOK_GUARD,
    WEBHOOK_REPO,
    WEBHOOKS,
)
from server.live import LiveConnections
from server.node import build_cluster, bus_redis
from server.observability import (
    health_handler,
    health_live,
    health_ready,
    latency_middleware,
    metrics_handler,
)
from server.oidc import OidcVerifier
from server.openapi import build_openapi
from server.ratelimit import RateLimiter
from server.rest import ROUTES
from server.ws import Connection, negotiate
from storage import BoardRepo, IdentityRepo, MemberRepo, WebhookRepo, create_pool, migrate

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
    resp = json_response(body, status or HTTP_STATUS[code])
    retry = (details or {}).get("retry_after_s")
    if code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE) and isinstance(retry, int | float):
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry)))
    elif code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
        error = "invalid_token" if details or code is ErrorCode.TOKEN_EXPIRED else None
        resp.headers["WWW-Authenticate"] = f'Bearer error="{error}"' if error else "Bearer"
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    metrics = request.app[METRICS]
    try:
        resp = await handler(request)
    except BoardcastError as e:
        resp = _error_response(e.code, e.message, request_id, e.details, status=e.http_status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, ErrorCode.BAD_REQUEST if e.status < 500 else ErrorCode.INTERNAL)
        resp = _error_response(code, e.reason, request_id, status=e.status)
        if "Allow" in e.headers:  # a 405 must say which methods the resource takes (RFC 9110)
            resp.headers["Allow"] = e.headers["Allow"]
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        resp = _error_response(ErrorCode.INTERNAL, "internal error", request_id)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if not resp.prepared:
        resp.headers["X-Request-Id"] = request_id
        decision = request.get(RATE)
        if decision is not None:
            rate_headers(resp, decision)
    metrics.http_requests.labels(method=request.method, status=str(resp.status)).inc()
    return resp


def guard_middleware(routes: dict[str, Route]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Authentication, then the rate limit of the route's tier, for every REST route."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = routes.get(f"{request.method} {resource.canonical}") if resource is not None else None
        if route is None:  # /health, /metrics, /openapi.json; /ws guards itself
            return await handler(request)
        app = request.app
        tier = route.rate_tier
        user = None
        g = app[GUARD]
        if not route.public:
            user = await _authenticate(request, g)
            request[USER] = user
        await g.admit(request, tier, g.subject(request, user, tier))
        return await handler(request)

    return guard


async def _authenticate(request: web.Request, g: Guard, *, websocket: bool = False) -> User:
    """The caller, or 401. Bad credentials count as sign-in attempts of the client address, so
    guessing tokens is throttled like guessing passwords."""
    try:
        user = await request.app[AUTH].authenticate(request, websocket=websocket)
    except BoardcastError as e:
        if e.code is ErrorCode.UNAUTHORIZED:
            await _count_bad_credentials(request, g)
        raise
    if user is None:
        where = (
            "?access_token=, a Bearer header or the cookie" if websocket else "a Bearer header or the cookie"
        )
        raise BoardcastError(ErrorCode.UNAUTHORIZED, f"authentication required: {where}")
    return user


async def _count_bad_credentials(request: web.Request, g: Guard) -> None:
    """One sign-in attempt of the client address; 429 when it has made too many. While the
    limiter is unreachable the auth tier fails closed, but the request is refused anyway: it gets
    the 401 its credentials deserve, not a 503 that would tell it to retry a token that will never
    work (the outage is logged and counted by the guard)."""
    try:
        await g.admit(request, Tier.AUTH, g.subject(request, None, Tier.AUTH), report=False)
    except BoardcastError as e:
        if e.code is not ErrorCode.UNAVAILABLE:
            raise


async def ws_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    g = app[GUARD]
    user = await _authenticate(request, g, websocket=True)
    await g.admit(request, Tier.READS, g.subject(request, user, Tier.READS), report=False)
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
        ws, transport, codec, user, app[REGISTRY], app[MEMBERS], app[METRICS], settings, app[CONNECTIONS]
    )
    await conn.run()
    return ws


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
        if settings.auth == "none":
            await repo.ensure_user(DEV_USER.id, DEV_USER.name, DEV_USER.email)
        app[POOL], app[REDIS], app[REPO] = pool, redis, repo
        app[MEMBERS], app[IDENTITY] = MemberRepo(pool), IdentityRepo(pool)
        yield
    finally:
        await redis.aclose()
        await pool.close()


async def _identity(app: web.Application) -> AsyncIterator[None]:
    s, metrics = app[SETTINGS], app[METRICS]
    async with aiohttp.ClientSession() as http:
        oidc = None
        if s.oidc_issuer and s.oidc_audience and s.oidc_jwks_url:
            oidc = OidcVerifier(
                issuer=s.oidc_issuer,
                audience=s.oidc_audience,
                jwks_url=s.oidc_jwks_url,
                session=http,
                cache_s=s.oidc_jwks_cache_s,
                metrics=metrics,
            )
        app[AUTH] = Authenticator(s, app[IDENTITY], metrics, oidc)
        limiter_cluster = bus_redis(s) if s.redis_cluster else None
        assert limiter_cluster is None or isinstance(limiter_cluster, RedisCluster)
        app[GUARD] = Guard(s, RateLimiter(app[REDIS], s.redis_prefix, cluster=limiter_cluster), metrics)
        try:
            yield
        finally:
            if oidc is not None:
                await oidc.close()
            if limiter_cluster is not None:
                await limiter_cluster.aclose()


async def _actors(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    board = BoardSettings(
        recent_events=s.recent_events,
        max_resume_events=s.max_resume_events,
        idle_passivate_s=s.passivate_s,
    )
    factory = make_board_factory(app[REPO], app[METRICS], board, functools.partial(grants, app[MEMBERS]))
    redis = bus_redis(s)
    # A node id per app, not per process: tests run several servers in one process, and each
    # is a node of its own.
    cluster = build_cluster(s, redis, app[METRICS], new_node_id())
    registry = BoardRegistry(factory, app[METRICS], cluster)
    app[REGISTRY] = registry
    live = app[CONNECTIONS] = LiveConnections(s.heartbeat_s, app[IDENTITY])
    cluster.start()
    live.start()
    try:
        yield
    finally:
        await live.stop()
        await registry.close()
        await cluster.close()
        await redis.aclose()


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    """The SSRF guard, and the webhook dispatcher unless this node does not deliver; stopped
    before the boards (it submits to them)."""
    s, registry = app[SETTINGS], app[REGISTRY]
    guard = GuardedResolver(TargetPolicy(s.webhook_allow_private, s.webhook_allowed_networks))
    app[WEBHOOK_REPO], app[WEBHOOK_GUARD] = WebhookRepo(app[POOL]), guard

    async def notify(board_id: uuid.UUID, rid: str, cmd: commands.Command) -> None:
        try:
            msg = Execute(author=commands.SYSTEM_AUTHOR, rid=rid, cmd=cmd)
            await registry.ask(board_id, msg, s.ask_timeout_s)
        except BoardcastError as e:
            if e.code not in (ErrorCode.NOT_FOUND, ErrorCode.GONE):  # no board left to tell
                raise

    dispatcher = None
    if s.webhook_dispatch:
        dispatcher = Dispatcher(
            app[WEBHOOK_REPO], guard, notify, dispatcher_settings(s), WebhookMetrics(app[METRICS].registry)
        )
        await dispatcher.start()
    app[WEBHOOKS] = dispatcher
    try:
        yield
    finally:
        if dispatcher is not None:
            await dispatcher.stop()
        await guard.close()


def dispatcher_settings(s: Settings) -> DispatcherSettings:
    return DispatcherSettings(
        poll_s=s.webhook_poll_s,
        timeout_s=s.webhook_timeout_s,
        max_response_bytes=s.webhook_max_response_bytes,
        backoff_base_s=s.webhook_backoff_base_s,
        backoff_max_s=s.webhook_backoff_max_s,
        max_failures=s.webhook_max_failures,
        max_failing_s=s.webhook_max_failing_s,
        concurrency=s.webhook_concurrency,
        lease_s=s.webhook_lease_s,
    )


async def _hand_off(app: web.Application) -> None:
    """SIGTERM: hand the boards off first (commit what is in flight, give the leases up, so
    other nodes take them over at once), then close the sockets with 1001 (reconnect and
    resume), whose clients then reach the boards' new owners."""
    await app[REGISTRY].close()
    await app[CONNECTIONS].close_all()


def create_app(settings: Settings) -> web.Application:
    routes = {f"{r.method} {r.path}": r for r in ROUTES}
    app = web.Application(
        middlewares=[latency_middleware, error_middleware, guard_middleware(routes)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(blobs_context)
    app.cleanup_ctx.append(_identity)
    app.cleanup_ctx.append(_actors)
    app.cleanup_ctx.append(history.history_ctx)
    app.cleanup_ctx.append(transfer.imports_ctx)
    app.cleanup_ctx.append(_webhooks)
    app.on_shutdown.append(_hand_off)
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/health", health_handler(VERSION))
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health/ready", health_ready)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    return app
