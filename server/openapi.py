"""OpenAPI 3.1 for the REST API, generated from the route table and its msgspec types."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.http import ErrorBody
from server.rest import ROUTES

_PARAM = re.compile(r"{(\w+)}")

_EXTRA_PATHS: dict[str, dict[str, Any]] = {
    "/health": {
        "get": {
            "security": [],
            "summary": "Liveness and dependencies",
            "responses": {"200": {"description": "healthy"}, "503": {"description": "PostgreSQL is down"}},
        }
    },
    "/health/live": {
        "get": {
            "security": [],
            "summary": "Liveness probe: the process answers (no dependency is checked)",
            "responses": {"200": {"description": "alive"}},
        }
    },
    "/health/ready": {
        "get": {
            "security": [],
            "summary": "Readiness probe: PostgreSQL answers",
            "responses": {"200": {"description": "ready"}, "503": {"description": "PostgreSQL is down"}},
        }
    },
    "/metrics": {
        "get": {
            "security": [],
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1"}},
        }
    },
    "/ws": {
        "get": {
            "summary": "WebSocket endpoint (see docs/PROTOCOL.md)",
            "responses": {"101": {"description": "switching protocols"}},
        }
    },
}


def build_openapi(version: str) -> dict[str, Any]:
    types: set[type[Any]] = {ErrorBody}
    for r in ROUTES:
        types.update(t for t in (r.body, r.response) if t is not None)
    ordered = sorted(types, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    ref = dict(zip(ordered, schemas, strict=True))
    error = {"description": "error", "content": {"application/json": {"schema": ref[ErrorBody]}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                for p in _PARAM.findall(r.path)
            ],
            "responses": {"default": error},
        }
        if r.public:
            op["security"] = []
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[r.body]}}}
            op["parameters"].append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 64},
                }
            )
        ok: dict[str, Any] = {"description": "success"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": ref[r.response]}}
        op["responses"][str(r.status)] = ok
        paths.setdefault(r.path, {})[r.method.lower()] = op
    paths.update(_EXTRA_PATHS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Boardcast", "version": version},
        "paths": paths,
        # docs/ACCESS.md: an access token, a personal API token or an OIDC provider's JWT as
        # Bearer, or the access cookie (mutations then need the X-CSRF-Token header).
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "boardcast_access"},
            },
        },
    }
