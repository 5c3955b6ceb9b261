"""/openapi.json: a valid OpenAPI 3.1 document that describes every route the server has, with
request schemas that accept exactly what the handlers decode and response schemas that the
real responses satisfy."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import msgspec
from openapi_spec_validator import OpenAPIV31SpecValidator

from protocol.model import dec_hook
from server import accounts, membership
from server.config import Rate
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


# JSON Schema counts 3.0 as an integer; the server's strict decoder does not, and the document
# says so (info.description). The check reads "integer" as the server does: a JSON number
# written without fraction or exponent, which json.loads gives as an int.
_STRICT_INTEGERS = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_STRICT_INTEGERS)


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) for one schema of the document,
    with the document's components reachable by its $refs."""
    rooted = {"components": spec["components"], **schema}
    v: jsonschema.Draft202012Validator = StrictValidator(
        rooted, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return v


def documented_response(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The response the document gives for ``status`` (named, not only ``default``), $ref
    resolved."""
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (path, method, status, sorted(responses))
    entry: dict[str, Any] = responses[str(status)]
    if "$ref" in entry:
        entry = spec["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
    return entry


def response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    schema: dict[str, Any] = documented_response(spec, path, method, status)["content"]["application/json"][
        "schema"
    ]
    return schema


_DOCUMENTED_HEADERS = (
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "X-Request-Id",
)


def check_headers(spec: dict[str, Any], path: str, method: str, resp: Any) -> None:
    """Every header of these the answer carries is documented for its status."""
    documented = documented_response(spec, path, method, resp.status).get("headers", {})
    for name in _DOCUMENTED_HEADERS:
        if name in resp.headers:
            assert name in documented, (path, method, resp.status, name)


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
        # cross-field rules the handlers check
        {"title": None, "description": None, "visibility": None},
        {"description": None, "visibility": "private"},
        {"title": None},
        {"after": col, "before": card},
        {"after": col, "before": None},
        {"column_id": col, "title": "t", "after": card, "before": col},
        {"column_id": col, "after": card, "before": card},
        {"user_id": col, "email": "a@b.io"},
        {"user_id": None, "email": None},
        {"email": "a@b.io", "user_id": None},
        # integers written as floats, and out of bounds
        {"max_uses": 3.0},
        {"max_uses": 3},
        {"max_uses": 1001},
        {"expires_in_s": 60.5},
        {"name": "ci", "expires_in_days": 30.0},
        {"name": "ci", "expires_in_days": True},
        # characters Python's \\s and ECMA-262's \\s disagree on, and control characters
        {"email": "a\x1f@b.io", "password": "long enough", "name": "Ann"},
        {"email": "a\x85b@c.io", "password": "long enough", "name": "Ann"},
        {"email": "a\ufeff@b.io", "password": "long enough", "name": "Ann"},
        {"email": "a\x01@b.io", "password": "x"},
        {"email": "a@b.io\n", "password": "x"},
        {"email": "é@ü.de", "password": "x"},
    ]
    return bodies


def _decodes(kind: type[Any], body: Any) -> bool:
    """What the handler takes: the body decodes, and meets the rules across its fields (which
    the handlers check; tests below check that they do, against the real server)."""
    try:
        msgspec.json.decode(msgspec.json.encode(body), type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError:
        return False
    rules: dict[str, Any] = getattr(kind, "rules", {})
    return jsonschema.Draft202012Validator(rules).is_valid(body)


async def test_request_schemas_accept_exactly_what_the_handlers_decode(http, server):
    spec = await fetch_spec(http, server)
    ids = {"column": str(uuid.uuid4()), "card": str(uuid.uuid4())}
    checked = 0
    for r in ROUTES:
        if r.body is None:
            body = spec["paths"][r.path][r.method.lower()].get("requestBody")
            # a body that is not JSON (an upload's multipart form) is described by hand
            assert body is None or "application/json" not in body["content"], (r.method, r.path)
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
    unknown = ("user_id", "token_id", "invitation_id", "webhook_id", "label_id", "field_id", "option_id")
    fill.update({k: str(uuid.uuid4()) for k in (*unknown, "checklist_id", "item_id", "comment_id")})
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
            check_headers(spec, template, method, resp)
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
    # errors are described too
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
            check_headers(spec, template, method, resp)
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


# ------------------------------------------------------------------ what the document promises


async def test_every_operation_has_an_id_a_declared_tag_and_named_answers(http, server):
    spec = await fetch_spec(http, server)
    tags = {t["name"] for t in spec["tags"]}
    ids = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert len(op["tags"]) == 1 and op["tags"][0] in tags, (method, path)
            # success: 2xx, 101 for the WebSocket, 307 for a download (a redirect to a signed link)
            assert any(s.startswith("2") or s in ("101", "307") for s in op["responses"]), (method, path)
    assert {"health", "metrics", "openapi", "websocket"} <= set(ids)
    assert len(ids) == len(set(ids))
    ws = spec["paths"]["/ws"]["get"]
    assert {"101", "400", "401", "403", "429"} <= set(ws["responses"])
    rate_limited = spec["components"]["responses"]["RateLimited"]["headers"]
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(rate_limited)


def _integers(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            yield where, node
        for key, value in node.items():
            yield from _integers(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _integers(value, f"{where}/{i}")


async def test_integers_have_a_format_and_64_bit_ones_say_int64(http, server):
    spec = await fetch_spec(http, server)
    found = dict(_integers(spec))
    assert found and all(node.get("format") in ("int32", "int64") for node in found.values()), found
    s = "/components/schemas"
    for where in (
        f"{s}/BoardSnapshot/properties/seq",
        f"{s}/BoardInfo/properties/seq",
        f"{s}/Column/properties/rank",
        f"{s}/Card/properties/rank",
        f"{s}/InvitationOut/properties/uses",
    ):
        assert found[where]["format"] == "int64", where
    assert found[f"{s}/InvitationCreate/properties/max_uses"]["format"] == "int32"
    assert "3.0" in spec["info"]["description"]


async def test_an_integral_float_is_refused_as_the_document_says(http, server):
    """JSON Schema counts 3.0 as an integer, so no schema can refuse it; the server's strict
    decoder does, and the document says so. The field is an integer, not a number."""
    spec = await fetch_spec(http, server)
    field = spec["components"]["schemas"]["InvitationCreate"]["properties"]["max_uses"]
    assert field["type"] == "integer"
    bid = (await create_board(http, server.base))["id"]
    url = f"{server.base}/api/v1/boards/{bid}/invitations"
    async with http.post(url, data=b'{"max_uses": 3.0}', headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert "int" in (await r.json())["error"]["message"]
    async with http.post(url, json={"max_uses": 3}) as r:
        assert r.status == 201
        assert (await r.json())["max_uses"] == 3


_RULED = [r for r in ROUTES if r.body is not None and r.body.rules]


async def test_cross_field_rules_in_the_schema_are_the_servers(http, server):
    """For the bodies whose fields depend on each other, the real server answers 400 exactly
    for those the document's schema rejects."""
    assert {r.body.__name__ for r in _RULED if r.body is not None} == {
        "BoardPatch",
        "ColumnCreate",
        "Placement",
        "CardCreate",
        "CardPatch",
        "CardMoveBody",
        "MemberAdd",
        "WebhookPatch",
    }
    spec = await fetch_spec(http, server)
    base = server.base
    bid = (await create_board(http, base))["id"]
    col, other = (await create_column(http, base, bid))["id"], (await create_column(http, base, bid))["id"]
    async with http.post(f"{base}/api/v1/boards/{bid}/cards", json={"column_id": col, "title": "c"}) as r:
        card = (await r.json())["id"]
    async with http.post(f"{base}/api/v1/boards/{bid}/cards", json={"column_id": col, "title": "d"}) as r:
        card2 = (await r.json())["id"]
    fill = {"board_id": bid, "column_id": col, "card_id": card, "webhook_id": str(uuid.uuid4())}
    bodies: list[dict[str, Any]] = [
        {},
        {"title": None},
        {"title": None, "description": None, "visibility": None},
        {"description": "d"},
        {"visibility": "private"},
        {"title": "t", "after": other, "before": None},
        {"title": "t", "after": other, "before": col},
        {"column_id": col, "title": "t", "after": card2, "before": card},
        {"column_id": col, "title": "t", "before": card2},
        {"column_id": col, "after": card2},
        {"column_id": col, "after": card2, "before": card2},
        {"after": other},
        {"after": other, "before": other},
        {"user_id": str(uuid.uuid4())},
        {"user_id": str(uuid.uuid4()), "email": "a@b.io"},
        {"user_id": None, "email": None},
        {"email": "nobody@b.io", "role": "viewer"},
    ]
    checked = 0
    for r in _RULED:
        v = validator(spec, content_schema(spec, r))
        url = base + r.path.format(**fill)
        for body in bodies:
            if not _decodes_alone(r.body, body):
                continue  # a per-field refusal: covered above
            async with http.request(r.method, url, json=body) as resp:
                text = await resp.text()
                assert (resp.status == 400) == (not v.is_valid(body)), (r.method, r.path, body, text)
                checked += 1
    assert checked > 20


def _decodes_alone(kind: Any, body: Any) -> bool:
    try:
        msgspec.json.decode(msgspec.json.encode(body), type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError:
        return False
    return True


async def test_idempotency_key_is_documented_where_taken_and_bounded_alike(http, server):
    spec = await fetch_spec(http, server)
    keyed = set()
    for r in ROUTES:
        params = spec["paths"][r.path][r.method.lower()]["parameters"]
        headers = [p for p in params if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        if r.idempotency_key:
            keyed.add((r.method, r.path))
            schema = headers[0]["schema"]
        else:
            assert headers == [], (r.method, r.path)
    assert ("DELETE", "/api/v1/boards/{board_id}/cards/{card_id}") in keyed
    assert ("POST", "/api/v1/boards") not in keyed  # not a board command: the key is not used
    assert schema["minLength"] == 1 and schema["maxLength"] == 64
    v = StrictValidator(schema)
    bid = (await create_board(http, server.base))["id"]
    url = f"{server.base}/api/v1/boards/{bid}/columns"
    for key in ("", "a", "k" * 64, "k" * 65, "two words", "~!#$%", "caf\u00e9", "tab\there"):
        async with http.post(url, json={"title": "t"}, headers={"Idempotency-Key": key}) as resp:
            assert (resp.status == 201) == v.is_valid(key), (key, resp.status, await resp.text())


async def test_websocket_refusals_are_the_documented_ones(http, start_server):
    srv = await start_server(auth="jwt", rate_limit=True, rate_reads=Rate(1, 600))
    spec = await fetch_spec(http, srv)
    error = validator(spec, spec["components"]["schemas"]["ErrorBody"])
    acct = await register(http, srv.base)
    async with http.post(
        f"{srv.base}/api/v1/auth/login",
        json={"email": acct.email, "password": acct.password, "session": "cookie"},
    ) as r:
        access = r.cookies["boardcast_access"].value
    url = f"{srv.base}/ws"
    cases = [
        ({}, 401),  # no credentials
        ({"Cookie": f"boardcast_access={access}"}, 403),  # a cookie without this site's Origin
        (acct.headers, 400),  # not a WebSocket handshake
        (acct.headers, 429),  # the second read of a limit of 1 (the first was the 400)
    ]
    for headers, status in cases:
        async with http.get(url, headers=headers) as resp:
            assert resp.status == status, (headers, await resp.text())
            assert error.is_valid(await resp.json())
            check_headers(spec, "/ws", "GET", resp)
            if status == 429:
                assert int(resp.headers["Retry-After"]) >= 1


async def test_health_answers_match_the_documented_schema(http, start_server):
    for overrides in ({}, {"rate_limit": True, "auth": "jwt"}):
        srv = await start_server(**overrides)
        spec = await fetch_spec(http, srv)
        async with http.get(f"{srv.base}/health") as resp:
            body = await resp.json()
            errors = list(
                validator(spec, response_schema(spec, "/health", "GET", resp.status)).iter_errors(body)
            )
            assert errors == [], (body, errors)
    async with http.get(f"{srv.base}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


async def test_a_wrong_method_says_which_are_allowed(http, server):
    async with http.request("TRACE", f"{server.base}/health") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert (await resp.json())["error"]["code"] == "bad_request"


async def test_ids_in_paths_and_queries_are_canonical_uuids_as_the_server_reads_them(http, server):
    spec = await fetch_spec(http, server)
    params = [
        p
        for item in spec["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
        if p["in"] in ("path", "query") and p["name"].endswith("_id")
    ]
    assert params
    good, upper = str(uuid.uuid4()), str(uuid.uuid4()).upper()
    for p in params:
        assert p["schema"]["format"] == "uuid", p
        jsonschema.validate(good, p["schema"])
        assert not jsonschema.Draft202012Validator(p["schema"]).is_valid(upper), p
    # and the server agrees: an upper-case board id is no board at all
    bid = (await create_board(http, server.base))["id"]
    async with http.get(f"{server.base}/api/v1/boards/{bid.upper()}") as r:
        assert r.status == 404
    async with http.get(f"{server.base}/api/v1/boards/{bid}") as r:
        assert r.status == 200
