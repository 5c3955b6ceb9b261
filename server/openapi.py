"""OpenAPI 3.1 for the HTTP API, generated from the route tables and their msgspec types.

Nothing is described by hand per route: the schemas come from the types the handlers decode and
encode (msgspec's bounds included), the responses from rules over the route record (a route
with a body can answer 400, one with path parameters 404, every REST route 429...), and the
routes outside the REST tables from the one table in :mod:`server.openapi_ops`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from protocol.model import UUID_PATTERN
from server.guard import Tier
from server.http import IDEMPOTENCY_KEY_PATTERN, Body, ErrorBody, Route
from server.openapi_ops import OPERATIONS, Answer, Operation
from server.rest import ROUTES

_PARAM = re.compile(r"{(\w+)}")
_INT32 = (-(2**31), 2**31 - 1)

_DESCRIPTION = """\
Boardcast's HTTP API: accounts, boards, columns, cards, members and invitations over REST, and
the WebSocket endpoint `/ws` (its messages are in docs/PROTOCOL.md).

Every refusal has the one JSON error body (`ErrorBody`) and a stable `error.code`. Every answer
carries `X-Request-Id` (the request's own, if it sent a safe one). Rate-limited routes carry
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` when rate limiting is on; 429 and
503 carry `Retry-After`.

Integers are written as JSON integers: `3`, not `3.0` or `3e0`, which the server refuses (its
decoder is strict) although JSON Schema counts them as integers."""

TAGS: list[dict[str, str]] = [
    {"name": "auth", "description": "Sign up, sign in, refresh and sign out"},
    {"name": "users", "description": "The caller's account, password and personal API tokens"},
    {"name": "boards", "description": "Boards the caller may see"},
    {"name": "columns", "description": "A board's columns"},
    {"name": "cards", "description": "A board's cards"},
    {"name": "members", "description": "A board's members and their roles"},
    {"name": "settings", "description": "A board's rules (WIP limits)"},
    {"name": "labels", "description": "A board's labels"},
    {"name": "fields", "description": "A board's custom fields"},
    {"name": "checklists", "description": "Checklists on cards"},
    {"name": "items", "description": "Checklist items"},
    {"name": "comments", "description": "Comments on cards"},
    {"name": "commands", "description": "Any board command, as over the WebSocket"},
    {"name": "invitations", "description": "Invitation link tokens"},
    {"name": "history", "description": "Activity feeds; boards and cards as they were (time travel)"},
    {"name": "imports", "description": "Board export, and imports running in the background"},
    {"name": "webhooks", "description": "A board's outgoing webhooks and their delivery attempts"},
    {"name": "realtime", "description": "The WebSocket endpoint"},
    {"name": "attachments", "description": "Files on cards: upload, download (signed links), thumbnails"},
    {"name": "blobs", "description": "Signed, expiring download links served by the server itself"},
    {"name": "operations", "description": "Health, metrics and this document"},
]

_RATE_HEADERS = {
    "RateLimit-Limit": "requests allowed per period in the route's tier",
    "RateLimit-Remaining": "requests left in the current period",
    "RateLimit-Reset": "whole seconds until the full count is available again",
}
# Ids in paths and queries follow the same rule as in bodies: the canonical form only.
_UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
_HEADERS: dict[str, dict[str, Any]] = {
    **{
        name: {
            "description": f"{text} (when rate limiting is on)",
            "schema": {"type": "integer", "format": "int64", "minimum": 0},
        }
        for name, text in _RATE_HEADERS.items()
    },
    "Retry-After": {
        "description": "whole seconds to wait before retrying",
        "schema": {"type": "integer", "format": "int64", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": 'the Bearer challenge (`error="invalid_token"` for bad ones)',
        "schema": {"type": "string"},
    },
    "X-Request-Id": {
        "description": "the request's id, as in the server's logs",
        "schema": {"type": "string"},
    },
}

# status: (component name, description, headers of its own)
_ERRORS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    400: ("BadRequest", "malformed JSON, or a field of the wrong type, out of bounds or refused", ()),
    401: (
        "Unauthorized",
        "no credentials, or bad or expired ones (`unauthorized`, `token_expired`)",
        ("WWW-Authenticate",),
    ),
    403: (
        "Forbidden",
        "the caller's role does not allow it, or a cookie-authenticated change came without X-CSRF-Token",
        (),
    ),
    404: (
        "NotFound",
        "no such board, column, card, member, token or invitation (or not visible to the caller)",
        (),
    ),
    409: (
        "Conflict",
        "the request contradicts the current state, or reuses an Idempotency-Key for another command",
        (),
    ),
    410: (
        "Gone",
        "the board was deleted (told only to its former members), or the invitation expired, was used"
        " up or was revoked",
        (),
    ),
    413: ("TooLarge", "the body is larger than the server accepts", ()),
    415: (
        "UnsupportedMediaType",
        "the body's Content-Type is not what the route takes (`application/json`; `multipart/form-data`"
        " for uploads), or an uploaded file's content is not of an allowed type",
        (),
    ),
    429: ("RateLimited", "too many requests in the route's tier", ("Retry-After",)),
    503: (
        "Unavailable",
        "briefly unavailable (sign-in while the rate limiter cannot be reached); retry",
        ("Retry-After",),
    ),
}

_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an access token, a personal API token (`bct_...`) or an OIDC provider's JWT",
    },
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "boardcast_access",
        "description": "the access cookie; changes also need `X-CSRF-Token` (the `boardcast_csrf` cookie)",
    },
    "refresh_cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "boardcast_refresh",
        "description": "the refresh cookie, with `X-CSRF-Token` repeating the `boardcast_csrf` cookie",
    },
    "access_token": {"type": "apiKey", "in": "query", "name": "access_token", "description": "`/ws` only"},
}
_DEFAULT_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]
# The routes whose credentials may come in the body (a refresh token) or not at all.
_OPTIONAL_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "refresh": [{}, {"refresh_cookie": []}],
    "logout": [{}, {"refresh_cookie": []}, *_DEFAULT_SECURITY],
}


# Request bodies that are not JSON, by handler.
_REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "upload_attachment": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "the file, with its name; its type is sniffed from the bytes",
                        }
                    },
                }
            }
        },
    }
}
_REDIRECT_HEADERS = {
    "Location": {"description": "the signed download link (expires)", "schema": {"type": "string"}}
}


def _tag(path: str) -> str:
    parts = path.removeprefix("/api/v1/").split("/")
    if parts[0] != "boards":
        return parts[0]
    if len(parts) < 3:
        return "boards"
    if len(parts) >= 5 and parts[4] == "attachments":
        return "attachments"
    return {
        "leave": "members",
        "transfer": "members",
        "activity": "history",
        "import": "imports",
        "export": "imports",
    }.get(parts[2], parts[2])


def _statuses(r: Route) -> set[int]:
    """The refusals a REST route can answer, by rule, plus the route's own."""
    out = set(r.errors) | {429}  # every REST route is rate limited
    if r.body is not None or r.query or r.choices or r.params or r.int_query or r.idempotency_key:
        out.add(400)
    if r.body is not None:
        out.add(413)
    if not r.public:
        out.add(401)
        # Roles guard everything under a board; CSRF guards every cookie-authenticated change.
        if r.method != "GET" or "{board_id}" in r.path:
            out.add(403)
    if _PARAM.search(r.path):
        out.add(404)
    if "{board_id}" in r.path and not r.public:
        out.add(410)  # a former member reaching a deleted board
    if r.idempotency_key:
        out.add(409)
    if r.rate_tier is Tier.AUTH:
        out.add(503)  # sign-in fails closed while the limiter is down
    return out


def _header_refs(names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in names}


def _int_formats(node: Any) -> None:
    """``format`` on every integer: int32 when its bounds fit, else int64 (seqs, ranks, counts:
    the server's integers are 64-bit, and a generated client must not hold them in 32 bits)."""
    if isinstance(node, dict):
        if node.get("type") == "integer" and "format" not in node:
            lo, hi = node.get("minimum"), node.get("maximum")
            fits = lo is not None and hi is not None and _INT32[0] <= lo and hi <= _INT32[1]
            node["format"] = "int32" if fits else "int64"
        for value in node.values():
            _int_formats(value)
    elif isinstance(node, list):
        for value in node:
            _int_formats(value)


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": p, "in": "path", "required": True, "schema": _UUID_SCHEMA} for p in _PARAM.findall(path)]


def _rest_operation(r: Route, ref: dict[type[Any], dict[str, Any]]) -> dict[str, Any]:
    params = _path_parameters(r.path)
    params += [{"name": q, "in": "query", "required": False, "schema": _UUID_SCHEMA} for q in r.query]
    params += [
        {"name": q, "in": "query", "required": False, "schema": {"type": "string", "enum": list(values)}}
        for q, values in r.choices
    ]
    params += [
        {
            "name": q,
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": low, "maximum": high},
        }
        for q, low, high in r.int_query
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": p.description,
            "schema": dict(p.schema),
        }
        for p in r.params
    ]
    if r.idempotency_key:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "makes a retry safe: the same key on the same board is applied once",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 64,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                },
            }
        )
    ok: dict[str, Any] = {"description": "success", "headers": _header_refs(["X-Request-Id", *_RATE_HEADERS])}
    if r.response is not None:
        ok["content"] = {"application/json": {"schema": ref[r.response]}}
    if 300 <= r.status < 400:
        ok["description"] = "a redirect to the signed download link"
        ok["headers"] = {**ok["headers"], **_REDIRECT_HEADERS}
    responses: dict[str, Any] = {str(r.status): ok}
    for status in sorted(_statuses(r)):
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    responses["default"] = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {
        "tags": [_tag(r.path)],
        "summary": r.summary,
        "operationId": r.handler.__name__,
        "parameters": params,
        "responses": responses,
    }
    name = r.handler.__name__
    if name in _OPTIONAL_SECURITY:
        op["security"] = _OPTIONAL_SECURITY[name]
    elif r.public:
        op["security"] = []
    if name in _REQUEST_BODIES:
        op["requestBody"] = _REQUEST_BODIES[name]
    elif r.body is not None:
        op["requestBody"] = {
            "required": not r.body_optional,
            "content": {"application/json": {"schema": ref[r.body]}},
        }
    return op


def _answer(a: Answer, ref: dict[type[Any], dict[str, Any]]) -> dict[str, Any]:
    if a.ref is not None:
        return {"$ref": f"#/components/responses/{a.ref}"}
    out: dict[str, Any] = {"description": a.description}
    if a.schema is not None:
        schema = a.schema if isinstance(a.schema, dict) else ref[a.schema]
        out["content"] = {a.media: {"schema": schema}}
    return out


def _extra_operation(o: Operation, ref: dict[type[Any], dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [o.tag],
        "summary": o.summary,
        "operationId": o.operation_id,
        "parameters": o.parameters,
        "responses": {str(status): _answer(a, ref) for status, a in o.answers.items()},
    }
    if o.description:
        op["description"] = o.description
    if o.security is not None:
        op["security"] = o.security
    return op


def _components(types: set[type[Any]]) -> tuple[dict[type[Any], dict[str, Any]], dict[str, Any]]:
    ordered = sorted(types, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    for t in ordered:
        if isinstance(t, type) and issubclass(t, Body) and t.rules:
            schema = components[t.__name__]
            assert not schema.keys() & t.rules.keys(), t  # a rule never replaces what msgspec says
            schema.update(t.rules)
    return dict(zip(ordered, schemas, strict=True)), components


def _responses(error: dict[str, Any]) -> dict[str, Any]:
    def one(description: str, headers: tuple[str, ...]) -> dict[str, Any]:
        return {
            "description": description,
            "headers": _header_refs(["X-Request-Id", *headers, *_RATE_HEADERS]),
            "content": {"application/json": {"schema": error}},
        }

    out = {name: one(text, headers) for name, text, headers in _ERRORS.values()}
    out["Error"] = one("an error: 500 `internal`, 503 `unavailable` (retry), 504 `timeout`...", ())
    return out


def build_openapi(version: str) -> dict[str, Any]:
    types: set[type[Any]] = {ErrorBody}
    for r in ROUTES:
        types.update(t for t in (r.body, r.response) if t is not None)
    for o in OPERATIONS:
        types.update(a.schema for a in o.answers.values() if isinstance(a.schema, type))
    ref, schemas = _components(types)
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        paths.setdefault(r.path, {})[r.method.lower()] = _rest_operation(r, ref)
    for o in OPERATIONS:
        paths.setdefault(o.path, {})["get"] = _extra_operation(o, ref)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Boardcast", "version": version, "description": _DESCRIPTION},
        "tags": TAGS,
        "paths": paths,
        # docs/ACCESS.md: an access token, a personal API token or an OIDC provider's JWT as
        # Bearer, or the access cookie (mutations then need the X-CSRF-Token header).
        "security": _DEFAULT_SECURITY,
        "components": {
            "schemas": schemas,
            "responses": _responses(ref[ErrorBody]),
            "headers": _HEADERS,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
    _int_formats(doc)
    return doc
