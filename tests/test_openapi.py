"""/openapi.json: a valid OpenAPI 3.1 document that describes every route the server has, with
request schemas that accept exactly what the handlers decode and response schemas that the
real responses satisfy."""

from __future__ import annotations

import re
import uuid
from typing import Any

import jsonschema
import msgspec
from openapi_spec_validator import OpenAPIV31SpecValidator

from protocol.model import dec_hook
from server import accounts, membership
from server.rest import BOARD_ROUTES, ROUTES
from tests.conftest import create_board, create_column
from tests.identity import register

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


async def fetch_spec(http, server) -> dict[str, Any]:
    async with http.get(f"{server.base}/openapi.json") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        spec: dict[str, Any] = await r.json()
        return spec


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) for one schema of the document,
    with the document's components reachable by its $refs."""
    rooted = {"components": spec["components"], **schema}
    return jsonschema.Draft202012Validator(
        rooted, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][path][method.lower()]["responses"]
    entry = responses.get(str(status), responses.get("default"))
    assert entry is not None, (path, method, status)
    schema: dict[str, Any] = entry["content"]["application/json"]["schema"]
    return schema


async def test_document_is_valid_openapi_3_1(http, server):
    spec = await fetch_spec(http, server)
    assert spec["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(spec).validate()
    errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
    assert errors == []
    op_ids = [
        op["operationId"] for item in spec["paths"].values() for m, op in item.items() if "operationId" in op
    ]
    assert len(op_ids) == len(set(op_ids))


async def test_a_broken_document_is_caught_by_the_validator(http, server):
    # the check above can fail: the same validator rejects a response without a description
    # and an operation whose path parameter is not declared
    spec = await fetch_spec(http, server)
    del spec["paths"]["/api/v1/boards"]["get"]["responses"]["200"]["description"]
    assert list(OpenAPIV31SpecValidator(spec).iter_errors())
    spec = await fetch_spec(http, server)
    spec["paths"]["/api/v1/boards/{board_id}"]["get"]["parameters"] = []
    assert list(OpenAPIV31SpecValidator(spec).iter_errors())


async def test_every_routed_method_is_documented_and_nothing_else(http, server):
    spec = await fetch_spec(http, server)
    routed: set[tuple[str, str]] = set()
    for route in server.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        routed.add((path, route.method.lower()))
        assert path in spec["paths"], path
        assert route.method.lower() in spec["paths"][path], (route.method, path)
    documented = {(p, m) for p, item in spec["paths"].items() for m in item if m in METHODS}
    assert documented == routed
    for path, item in spec["paths"].items():
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)


def _candidates(ids: dict[str, str]) -> list[Any]:
    """Bodies on both sides of the line for one request type."""
    col, card = ids["column"], ids["card"]
    bodies: list[Any] = [
        {},
        [],
        "text",
        None,
        {"unknown": 1},
        {"title": "t"},
        {"title": ""},
        {"title": "x" * 201},
        {"title": 5},
        {"title": None},
        {"title": "t", "description": "d"},
        {"title": "t", "description": "x" * 20_001},
        {"title": "t", "extra": True},
        {"description": "only"},
        {"after": col},
        {"before": card},
        {"after": "not-a-uuid"},
        {"after": None},
        {"column_id": col},
        {"column_id": col, "title": "t"},
        {"column_id": col, "title": "t", "after": card},
        {"column_id": 7, "title": "t"},
        {"column_id": "nope", "title": "t"},
        {"column_id": col, "rank": 3},
        {"title": "t", "after": col},
        {"title": "t", "before": col},
        {"email": "a@b.io", "password": "long enough", "name": "Ann"},
        {"email": "a@b.io", "password": "short", "name": "Ann"},
        {"email": "not-an-email", "password": "long enough", "name": "Ann"},
        {"email": "a@b.io", "password": "x"},
        {"email": "a@b.io", "password": "x", "session": "cookie"},
        {"email": "a@b.io", "password": "x", "session": "jar"},
        {"refresh_token": "bcr_x"},
        {"refresh_token": ""},
        {"current_password": "x", "new_password": "long enough"},
        {"name": "ci", "expires_in_days": 30},
        {"name": "ci", "expires_in_days": 0},
        {"user_id": col, "role": "member"},
        {"email": "a@b.io", "role": "viewer"},
        {"user_id": col, "role": "king"},
        {"role": "admin"},
        {"role": "owner"},
        {"user_id": col},
        {"role": "member", "expires_in_s": 60, "max_uses": 3},
        {"max_uses": 0},
        {"expires_in_s": 10**9},
        {"token": "bci_x"},
        {"visibility": "signed_in"},
        {"visibility": "public"},
    ]
    return bodies


def _decodes(kind: type[Any], body: Any) -> bool:
    try:
        msgspec.json.decode(msgspec.json.encode(body), type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError:
        return False
    return True


async def test_request_schemas_accept_exactly_what_the_handlers_decode(http, server):
    spec = await fetch_spec(http, server)
    ids = {"column": str(uuid.uuid4()), "card": str(uuid.uuid4())}
    checked = 0
    for r in ROUTES:
        if r.body is None:
            assert "requestBody" not in spec["paths"][r.path][r.method.lower()]
            continue
        content = spec["paths"][r.path][r.method.lower()]["requestBody"]["content"]
        v = validator(spec, content["application/json"]["schema"])
        for body in _candidates(ids):
            assert v.is_valid(body) == _decodes(r.body, body), (r.method, r.path, body)
            checked += 1
        # every request type forbids unknown fields, and says so
        name = r.body.__name__
        assert spec["components"]["schemas"][name]["additionalProperties"] is False
    assert checked > 0


async def test_bodies_the_schema_rejects_are_refused_by_the_server(http, server):
    spec = await fetch_spec(http, server)
    base = server.base
    bid = (await create_board(http, base))["id"]
    col = await create_column(http, base, bid)
    async with http.post(
        f"{base}/api/v1/boards/{bid}/cards", json={"column_id": col["id"], "title": "c"}
    ) as r:
        card = await r.json()
    fill = {"board_id": bid, "column_id": col["id"], "card_id": card["id"]}
    fill.update({k: str(uuid.uuid4()) for k in ("user_id", "token_id", "invitation_id")})
    for r in ROUTES:
        if r.body is None:
            continue
        url = base + r.path.format(**fill)
        schema = spec["components"]["schemas"][r.body.__name__]
        v = validator(spec, content_schema(spec, r))
        for body in ({"nope": 1}, {}, {name: 12345 for name in schema["properties"]}):
            if v.is_valid(body):
                continue
            async with http.request(r.method, url, json=body) as resp:
                assert resp.status == 400, (r.method, r.path, body, await resp.text())
                err = (await resp.json())["error"]
                assert err["code"] == "bad_request"
    async with http.get(f"{base}/api/v1/boards/{bid}") as resp:
        assert (await resp.json())["seq"] == 2  # column and card: nothing else was applied


def content_schema(spec: dict[str, Any], r: Any) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"][r.path][r.method.lower()]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


async def test_real_responses_match_their_documented_schemas(http, server):
    spec = await fetch_spec(http, server)
    base = server.base
    seen: set[tuple[str, str]] = set()

    async def check(method: str, template: str, url: str, **kw: Any) -> Any:
        async with http.request(method, base + url, **kw) as resp:
            body = await resp.json() if resp.status != 204 else None
            op = spec["paths"][template][method.lower()]
            assert str(resp.status) in op["responses"] or resp.status >= 400, (method, url, resp.status)
            if body is not None:
                schema = response_schema(spec, template, method, resp.status)
                errors = list(validator(spec, schema).iter_errors(body))
                assert errors == [], (method, url, body, errors)
            seen.add((template, method.lower()))
            return body

    b = "/api/v1/boards/{board_id}"
    board = await check("POST", "/api/v1/boards", "/api/v1/boards", json={"title": "B"})
    bid = board["id"]
    await check("GET", "/api/v1/boards", "/api/v1/boards")
    await check("PATCH", b, f"/api/v1/boards/{bid}", json={"description": "d"})
    col = await check("POST", f"{b}/columns", f"/api/v1/boards/{bid}/columns", json={"title": "C"})
    col2 = await check("POST", f"{b}/columns", f"/api/v1/boards/{bid}/columns", json={"title": "D"})
    cu = f"/api/v1/boards/{bid}/columns/{col['id']}"
    await check("GET", f"{b}/columns", f"/api/v1/boards/{bid}/columns")
    await check("GET", f"{b}/columns/{{column_id}}", cu)
    await check("PATCH", f"{b}/columns/{{column_id}}", cu, json={"title": "C2"})
    await check("POST", f"{b}/columns/{{column_id}}/move", f"{cu}/move", json={"after": col2["id"]})
    card = await check(
        "POST", f"{b}/cards", f"/api/v1/boards/{bid}/cards", json={"column_id": col["id"], "title": "K"}
    )
    ku = f"/api/v1/boards/{bid}/cards/{card['id']}"
    await check("GET", f"{b}/cards", f"/api/v1/boards/{bid}/cards")
    await check("GET", f"{b}/cards/{{card_id}}", ku)
    await check("PATCH", f"{b}/cards/{{card_id}}", ku, json={"title": "K2"})
    await check("POST", f"{b}/cards/{{card_id}}/move", f"{ku}/move", json={"column_id": col2["id"]})
    await check("GET", b, f"/api/v1/boards/{bid}")
    # errors are described by the default response
    await check("GET", f"{b}/cards/{{card_id}}", f"/api/v1/boards/{bid}/cards/{uuid.uuid4()}")
    await check("POST", f"{b}/cards", f"/api/v1/boards/{bid}/cards", json={"title": 1})
    await check("DELETE", f"{b}/cards/{{card_id}}", ku)
    await check("DELETE", f"{b}/columns/{{column_id}}", cu)
    await check("DELETE", b, f"/api/v1/boards/{bid}")
    assert seen == {(r.path, r.method.lower()) for r in BOARD_ROUTES}


async def test_identity_responses_match_their_documented_schemas(http, start_server):
    srv = await start_server(auth="jwt")
    spec = await fetch_spec(http, srv)
    seen: set[tuple[str, str]] = set()

    async def check(method: str, template: str, url: str, auth: Any = None, **kw: Any) -> Any:
        headers = auth.headers if auth is not None else None
        async with http.request(method, srv.base + url, headers=headers, **kw) as resp:
            body = await resp.json() if resp.status != 204 else None
            op = spec["paths"][template][method.lower()]
            assert str(resp.status) in op["responses"], (method, url, resp.status, body)
            if body is not None:
                errors = list(
                    validator(spec, response_schema(spec, template, method, resp.status)).iter_errors(body)
                )
                assert errors == [], (method, url, body, errors)
            seen.add((template, method.lower()))
            return body

    a, m = "/api/v1/auth", "/api/v1/users/me"
    reg = {"email": "schema-owner@example.test", "password": "long enough", "name": "Owner"}
    session = await check("POST", f"{a}/register", f"{a}/register", json=reg)
    login = await check(
        "POST", f"{a}/login", f"{a}/login", json={"email": reg["email"], "password": "long enough"}
    )
    await check("POST", f"{a}/refresh", f"{a}/refresh", json={"refresh_token": login["refresh_token"]})
    owner = await register(http, srv.base)
    other = await register(http, srv.base)
    await check("GET", m, m, owner)
    await check(
        "POST",
        f"{m}/password",
        f"{m}/password",
        owner,
        json={"current_password": owner.password, "new_password": "another long one"},
    )
    tok = await check("POST", f"{m}/tokens", f"{m}/tokens", owner, json={"name": "ci"})
    await check("GET", f"{m}/tokens", f"{m}/tokens", owner)
    await check("DELETE", f"{m}/tokens/{{token_id}}", f"{m}/tokens/{tok['id']}", owner)
    bid = (await create_board_as(http, srv.base, owner))["id"]
    b, bb = "/api/v1/boards/{board_id}", f"/api/v1/boards/{bid}"
    await check(
        "POST", f"{b}/members", f"{bb}/members", owner, json={"user_id": other.user_id, "role": "member"}
    )
    await check("GET", f"{b}/members", f"{bb}/members", owner)
    mu = f"{b}/members/{{user_id}}"
    await check("PATCH", mu, f"{bb}/members/{other.user_id}", owner, json={"role": "admin"})
    await check("POST", f"{b}/transfer", f"{bb}/transfer", owner, json={"user_id": other.user_id})
    await check("DELETE", mu, f"{bb}/members/{owner.user_id}", other)
    inv = await check("POST", f"{b}/invitations", f"{bb}/invitations", other, json={"role": "viewer"})
    await check("GET", f"{b}/invitations", f"{bb}/invitations", other)
    accept = "/api/v1/invitations/accept"
    await check("POST", accept, accept, owner, json={"token": inv["token"]})
    await check("POST", f"{b}/leave", f"{bb}/leave", owner)
    await check("DELETE", f"{b}/invitations/{{invitation_id}}", f"{bb}/invitations/{inv['id']}", other)
    await check("POST", f"{a}/logout", f"{a}/logout", json={"refresh_token": session["refresh_token"]})
    assert seen == {(r.path, r.method.lower()) for r in accounts.ROUTES + membership.ROUTES}


async def create_board_as(http: Any, base: str, who: Any) -> dict[str, Any]:
    async with http.post(f"{base}/api/v1/boards", json={"title": "B"}, headers=who.headers) as r:
        assert r.status == 201
        body: dict[str, Any] = await r.json()
        return body
