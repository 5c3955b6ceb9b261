"""Who may manage a board's webhooks (owners and admins; docs/ACCESS.md), and secrets that
never reach a log line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest
import structlog

from tests.conftest import create_board, create_column
from tests.roles import accounts, assert_error, assert_unauthorized, board_url, board_with_roles, call
from tests.webhook_receiver import (
    FAST,
    create_webhook,
    get_json,
    no_webhooks_left,  # noqa: F401 (an autouse fixture)
    receiver,
)

pytestmark = pytest.mark.timeout(90)

CALLERS = ("owner", "admin", "member", "viewer", "outsider", "anonymous")


@dataclasses.dataclass(frozen=True)
class Row:
    action: str
    method: str
    path: str  # after /webhooks; {hook} is a webhook of the board
    expect: tuple[int, ...]  # by CALLERS
    body: dict[str, object] | None = None


# fmt: off
TABLE = [
    Row("list webhooks",   "GET",    "",                   (200, 200, 403, 403, 404, 401)),
    Row("create webhook",  "POST",   "",                   (201, 201, 403, 403, 404, 401), {"url": "URL"}),
    Row("read webhook",    "GET",    "/{hook}",            (200, 200, 403, 403, 404, 401)),
    Row("change webhook",  "PATCH",  "/{hook}",            (200, 200, 403, 403, 404, 401), {"active": False}),
    Row("delete webhook",  "DELETE", "/{hook}",            (204, 204, 403, 403, 404, 401)),
    Row("list deliveries", "GET",    "/{hook}/deliveries", (200, 200, 403, 403, 404, 401)),
]
# fmt: on


async def test_only_owners_and_admins_manage_webhooks(http, start_server):
    srv = await start_server(auth="jwt", **{**FAST, "webhook_dispatch": False})
    base = srv.base
    people = await accounts(http, base, "owner", "admin", "member", "viewer", "outsider")
    bid = await board_with_roles(http, base, people)
    owner = people["owner"]
    url = "http://127.0.0.1:9/hook"

    async def hooks_seen() -> list[object]:
        r = await call(http, "GET", board_url(base, bid, "/webhooks"), owner)
        assert r.status == 200, r.body
        return sorted(json.dumps(h, sort_keys=True) for h in r.body["webhooks"])

    failures = []
    for row in TABLE:
        for caller, expected in zip(CALLERS, row.expect, strict=True):
            made = await call(http, "POST", board_url(base, bid, "/webhooks"), owner, json={"url": url})
            assert made.status == 201, made.body
            before = await hooks_seen()
            who = people.get(caller)
            body = None if row.body is None else {k: url if v == "URL" else v for k, v in row.body.items()}
            path = "/webhooks" + row.path.format(hook=made.body["id"])
            reply = await call(http, row.method, board_url(base, bid, path), who, json=body)
            if reply.status != expected:
                failures.append(f"{row.action} as {caller}: {reply.status}, expected {expected}")
                continue
            if expected == 401:
                assert_unauthorized(reply)
            elif expected == 403:
                err = assert_error(reply, 403, "forbidden")
                assert "manage webhooks" in err["message"]
            elif expected == 404:
                assert_error(reply, 404, "not_found")
            if expected >= 400:
                assert await hooks_seen() == before, (row.action, caller)
            elif row.method == "POST":
                assert "secret" in reply.body
            await call(http, "DELETE", board_url(base, bid, f"/webhooks/{made.body['id']}"), owner)
    assert failures == []


async def test_a_signed_in_stranger_reading_a_visible_board_cannot_see_its_webhooks(http, start_server):
    srv = await start_server(auth="jwt", **{**FAST, "webhook_dispatch": False})
    people = await accounts(http, srv.base, "owner", "stranger")
    bid = await board_with_roles(http, srv.base, people)
    r = await call(http, "PATCH", board_url(srv.base, bid), people["owner"], json={"visibility": "signed_in"})
    assert r.status == 200
    assert (await call(http, "GET", board_url(srv.base, bid), people["stranger"])).status == 200
    reply = await call(http, "GET", board_url(srv.base, bid, "/webhooks"), people["stranger"])
    assert_error(reply, 403, "forbidden")


async def test_secrets_and_url_credentials_never_reach_the_logs(http, start_server, caplog):
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        srv = await start_server(**{**FAST, "webhook_max_failures": 2})
        async with receiver() as rec:
            rec.default = 500
            bid = (await create_board(http, srv.base))["id"]
            hook = await create_webhook(http, srv.base, bid, rec.url + "?token=query-credential-123")
            secret = hook["secret"]
            await create_column(http, srv.base, bid)
            got = await rec.wait_for(2)
            assert got[0].headers["Boardcast-Signature"]
            # the dispatcher logs an attempt once its answer is recorded, after the receiver saw it
            async with asyncio.timeout(10):
                while not {"webhook_delivery_failed", "webhook_disabled"} <= {e.get("event") for e in logs}:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            # and a refused creation and a bad body are logged without them too
            async with http.post(
                f"{srv.base}/api/v1/boards/{bid}/webhooks",
                json={"url": "http://10.0.0.1/?token=query-credential-123", "secret": secret},
            ) as r:
                assert r.status == 400
            snap = await get_json(http, f"{srv.base}/api/v1/boards/{bid}")
            deliveries = await get_json(
                http, f"{srv.base}/api/v1/boards/{bid}/webhooks/{hook['id']}/deliveries"
            )
    text = "\n".join(repr(entry) for entry in logs) + "\n".join(r.getMessage() for r in caplog.records)
    assert any(e.get("event") == "webhook_delivery_failed" for e in logs), logs  # the logs were captured
    assert any(e.get("event") == "webhook_disabled" for e in logs), logs
    assert secret not in text
    assert secret[6:20] not in text
    assert "query-credential-123" not in text
    assert secret not in json.dumps(snap) and secret not in json.dumps(deliveries)
