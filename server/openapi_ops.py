"""The routes outside the REST tables, as /openapi.json describes them: health, metrics, the
document itself and the WebSocket endpoint. One table: a new operational route is one entry
here (the test that every routed method is documented fails until it is)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

# ------------------------------------------------------------------ /health's report
# What server.app.health answers; tests/test_openapi.py checks real reports against it.


class Probe(msgspec.Struct, kw_only=True, omit_defaults=True):
    ok: bool
    latency_ms: float | msgspec.UnsetType = msgspec.UNSET  # when ok
    error: str | msgspec.UnsetType = msgspec.UNSET  # the exception's type, when not ok


class RateLimiterHealth(msgspec.Struct, kw_only=True, omit_defaults=True):
    ok: bool
    enabled: bool
    policy: str | msgspec.UnsetType = msgspec.UNSET  # while the limiter cannot be reached


class OidcHealth(msgspec.Struct, kw_only=True):
    ok: bool  # false while the last JWKS fetch failed (cached keys are still used)
    keys: int
    age_s: float | None
    last_error: str | None


class WebhooksHealth(msgspec.Struct, kw_only=True):
    dispatching: bool  # this node delivers webhooks
    in_flight: int  # webhooks this node is delivering to now
    behind: int  # active webhooks (of every node) with events still to deliver
    events_behind: int  # events after their cursors
    disabled: int


class NodeHealth(msgspec.Struct, kw_only=True, omit_defaults=True):
    """This process as a node of the cluster (README, "Several nodes")."""

    id: str
    redis: Literal["ok", "down"]  # the command bus's last Redis call
    boards_owned: int  # boards whose lease this node holds
    boards_unleased: int  # activated while Redis was unreachable (fenced by PostgreSQL alone)
    leases: str
    remote_viewers: int  # viewers on other nodes of boards owned here
    viewers_of_remote_boards: int  # viewers here of boards owned elsewhere
    bus_lag_s: float  # how long the newest parcel waited in this node's inbox
    error: str | msgspec.UnsetType = msgspec.UNSET  # the last Redis error, while it is down


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: Literal["ok", "degraded"]
    version: str
    postgres: Probe
    redis: Probe
    blob_store: Probe  # the configured blob store (local folder writable, S3 bucket reachable)
    rate_limiter: RateLimiterHealth
    oidc: OidcHealth | msgspec.UnsetType = msgspec.UNSET  # when an OIDC provider is configured
    boards_active: int
    connections: int
    webhooks: WebhooksHealth | msgspec.UnsetType = msgspec.UNSET  # while PostgreSQL answers
    node: NodeHealth


# ------------------------------------------------------------------ the table


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented response. ``schema`` is a msgspec type (referenced from the components)
    or a JSON Schema; ``ref`` names a shared response of the components instead."""

    description: str = ""
    media: str = "application/json"
    schema: type[Any] | dict[str, Any] | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    description: str = ""
    security: list[dict[str, list[str]]] | None = field(default_factory=list)  # None: the default
    parameters: list[dict[str, Any]] = field(default_factory=list)


OPERATIONS: list[Operation] = [
    Operation(
        "/health",
        "health",
        "Liveness and dependencies",
        "operations",
        {
            200: Answer(
                "serving; `status` is `degraded` while Redis or the rate limiter is down", schema=Health
            ),
            503: Answer("PostgreSQL does not answer", schema=Health),
        },
    ),
    Operation(
        "/health/live",
        "health_live",
        "Liveness probe: the process answers (nothing else is checked)",
        "operations",
        {200: Answer("alive", schema={"type": "object", "properties": {"status": {"const": "ok"}}})},
    ),
    Operation(
        "/health/ready",
        "health_ready",
        "Readiness probe: PostgreSQL answers (Redis is not required: limits fail open)",
        "operations",
        {
            200: Answer("ready", schema={"type": "object", "properties": {"status": {"type": "string"}}}),
            503: Answer("PostgreSQL does not answer", schema={"type": "object"}),
        },
    ),
    Operation(
        "/metrics",
        "metrics",
        "Prometheus metrics",
        "operations",
        {
            200: Answer(
                "Prometheus text exposition format, or OpenMetrics when the `Accept` header asks for"
                " `application/openmetrics-text`",
                media="text/plain",
                schema={"type": "string"},
            )
        },
    ),
    Operation(
        "/openapi.json",
        "openapi",
        "This document",
        "operations",
        {200: Answer("OpenAPI 3.1", schema={"type": "object"})},
    ),
    Operation(
        "/ws",
        "websocket",
        "WebSocket endpoint (docs/PROTOCOL.md)",
        "realtime",
        {
            101: Answer("switching protocols: the connection speaks the negotiated subprotocol"),
            400: Answer(ref="BadRequest"),
            401: Answer(ref="Unauthorized"),
            403: Answer(ref="Forbidden"),
            429: Answer(ref="RateLimited"),
        },
        description=(
            "A WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`); anything else "
            "is answered 400. Offer `boardcast.v1.msgpack` or `boardcast.v1.json` in "
            "`Sec-WebSocket-Protocol`: without either the server accepts and closes with 4002. "
            "Credentials come as `?access_token=`, a Bearer header or the access cookie; a "
            "cookie-authenticated handshake must come from this site (`Origin`), else 403. "
            "A handshake counts as one read of the caller's rate limit."
        ),
        security=[{"bearer": []}, {"cookie": []}, {"access_token": []}],
        parameters=[
            {
                "name": "Sec-WebSocket-Protocol",
                "in": "header",
                "required": False,
                "description": "the subprotocols offered, comma-separated",
                "schema": {"type": "string"},
            }
        ],
    ),
]
