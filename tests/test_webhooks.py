"""Webhook delivery (docs/WEBHOOKS.md) to a real receiver on 127.0.0.1: signed, in seq order,
retried with backoff after failures, disabled after too many, the admins told by an event."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, create_board, create_column
from tests.webhook_receiver import (
    FAST,
    create_webhook,
    get_json,
    no_webhooks_left,  # noqa: F401 (an autouse fixture)
    receiver,
    wait_until,
)
from tests.wsclient import WsClient

pytestmark = pytest.mark.timeout(60)
DOC = (Path(__file__).resolve().parent.parent / "docs" / "WEBHOOKS.md").read_text()


@pytest.fixture
async def ws_client(http: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Awaitable[WsClient]]]:
    """WebSocket clients of a server the test started (conftest's ``connect`` would start a
    second, default server beside it: a second dispatcher with other settings)."""
    clients: list[WsClient] = []

    async def make(srv: RunningServer, encoding: str) -> WsClient:
        c = await WsClient.connect(http, srv.ws_url, encoding)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


def _hooks(base: str, board_id: str, rest: str = "") -> str:
    return f"{base}/api/v1/boards/{board_id}/webhooks{rest}"


async def _cards(http: Any, base: str, board_id: str, column_id: str, *titles: str) -> None:
    for title in titles:
        async with http.post(
            f"{base}/api/v1/boards/{board_id}/cards", json={"column_id": column_id, "title": title}
        ) as r:
            assert r.status == 201, await r.text()


async def _attempts(http: Any, base: str, board_id: str, hook_id: str) -> list[dict[str, Any]]:
    body = await get_json(http, _hooks(base, board_id, f"/{hook_id}/deliveries?limit=200"))
    return list(reversed(body["deliveries"]))  # oldest first


async def test_board_commands_are_delivered_signed_in_seq_order(http, start_server):
    srv = await start_server(**FAST)
    async with receiver() as rec:
        board = await create_board(http, srv.base)
        bid = board["id"]
        created = await create_webhook(http, srv.base, bid, rec.url, description="all of it")
        rec.secret = created["secret"]
        assert rec.secret.startswith("whsec_") and len(rec.secret) > 40
        assert created["events"] == ["*"] and created["active"] is True
        assert created["delivered_seq"] == 0  # starts after what the board had
        col = await create_column(http, srv.base, bid)
        await _cards(http, srv.base, bid, col["id"], "one", "two", "three")
        got = await rec.wait_for(4)
        assert [r.body["seq"] for r in got] == [1, 2, 3, 4]
        assert [r.body["kind"] for r in got] == ["column.created"] + ["card.created"] * 3
        assert all(r.signature_ok for r in got), [r.headers.get("Boardcast-Signature") for r in got]
        first = got[1]
        assert first.headers["Boardcast-Event-Id"] == f"{bid}:2" == first.body["id"]
        assert first.headers["Boardcast-Event-Kind"] == "card.created"
        assert first.headers["Boardcast-Webhook-Id"] == created["id"] == first.body["webhook_id"]
        assert first.headers["Boardcast-Delivery-Attempt"] == "1"
        assert first.headers["Content-Type"] == "application/json"
        assert first.body["board_id"] == bid
        assert first.body["author"] == "00000000-0000-4000-8000-000000000001"  # the dev user
        assert abs(first.body["ts_ms"] / 1000 - time.time()) < 60
        assert first.body["event"]["kind"] == "card.created"
        assert first.body["event"]["card"]["title"] == "one"
        # a tampered body does not verify against the same header
        assert not rec.verify(first.headers["Boardcast-Signature"], first.raw.replace(b"one", b"One"))
        # the secret is shown once: never by a read
        listed = await get_json(http, _hooks(srv.base, bid))
        assert [h["id"] for h in listed["webhooks"]] == [created["id"]]
        assert "secret" not in listed["webhooks"][0]
        one = await get_json(http, _hooks(srv.base, bid, f"/{created['id']}"))
        assert "secret" not in one and rec.secret not in str(one)
        await wait_until(
            lambda: _delivered_seq(http, srv.base, bid, created["id"], 4)
        )  # the cursor moved after the last success
        attempts = await _attempts(http, srv.base, bid, created["id"])
        assert [(a["seq"], a["outcome"], a["status"], a["attempt"]) for a in attempts] == [
            (s, "delivered", 200, 1) for s in (1, 2, 3, 4)
        ]


async def _delivered_seq(http: Any, base: str, bid: str, hook_id: str, seq: int) -> bool:
    body = await get_json(http, _hooks(base, bid, f"/{hook_id}"))
    return bool(body["delivered_seq"] >= seq)


async def test_only_chosen_event_kinds_are_delivered(http, start_server):
    srv = await start_server(**FAST)
    async with receiver() as rec:
        bid = (await create_board(http, srv.base))["id"]
        created = await create_webhook(http, srv.base, bid, rec.url, events=["card.created"])
        assert created["events"] == ["card.created"]
        rec.secret = created["secret"]
        col = await create_column(http, srv.base, bid)
        await _cards(http, srv.base, bid, col["id"], "a")
        async with http.patch(
            f"{srv.base}/api/v1/boards/{bid}/columns/{col['id']}", json={"title": "Renamed"}
        ) as r:
            assert r.status == 200
        await _cards(http, srv.base, bid, col["id"], "b")
        got = await rec.wait_for(2)
        assert [(r.body["seq"], r.body["kind"]) for r in got] == [(2, "card.created"), (4, "card.created")]
        # the cursor passes the events it does not take
        await wait_until(lambda: _delivered_seq(http, srv.base, bid, created["id"], 4))
        async with http.post(_hooks(srv.base, bid), json={"url": rec.url, "events": ["card.exploded"]}) as r:
            assert r.status == 400
            err = (await r.json())["error"]
            assert err["code"] == "bad_request" and "card.exploded" in err["message"]
        async with http.post(
            _hooks(srv.base, bid), json={"url": rec.url, "events": ["*", "card.created"]}
        ) as r:
            assert r.status == 400


async def test_a_failing_receiver_gets_retries_and_order_is_kept(http, start_server):
    srv = await start_server(**FAST)
    async with receiver() as rec:
        rec.script = [500, 500]  # then 200
        bid = (await create_board(http, srv.base))["id"]
        created = await create_webhook(http, srv.base, bid, rec.url)
        rec.secret = created["secret"]
        col = await create_column(http, srv.base, bid)
        await _cards(http, srv.base, bid, col["id"], "x", "y")
        got = await rec.wait_for(5)
        assert [(r.body["seq"], r.headers["Boardcast-Delivery-Attempt"], r.status) for r in got] == [
            (1, "1", 500),
            (1, "2", 500),
            (1, "3", 200),
            (2, "1", 200),
            (3, "1", 200),
        ]
        assert all(r.signature_ok for r in got)
        # every attempt is recorded, newest first, paginated
        await wait_until(lambda: _delivered_seq(http, srv.base, bid, created["id"], 3))
        page = await get_json(http, _hooks(srv.base, bid, f"/{created['id']}/deliveries?limit=2"))
        assert [(d["seq"], d["attempt"]) for d in page["deliveries"]] == [(3, 1), (2, 1)]
        assert page["next_before"] is not None
        rest = await get_json(
            http, _hooks(srv.base, bid, f"/{created['id']}/deliveries?limit=10&before={page['next_before']}")
        )
        assert [(d["seq"], d["attempt"], d["outcome"], d["status"]) for d in rest["deliveries"]] == [
            (1, 3, "delivered", 200),
            (1, 2, "failed", 500),
            (1, 1, "failed", 500),
        ]
        assert rest["next_before"] is None
        assert rest["deliveries"][1]["error"] == "HTTP 500"
        assert all(d["duration_ms"] >= 0 for d in rest["deliveries"])
        for bad in ("limit=0", "limit=201", "limit=x", "before=-1", "limit=1.5"):
            async with http.get(_hooks(srv.base, bid, f"/{created['id']}/deliveries?{bad}")) as r:
                assert r.status == 400, bad
        # and the metrics count the outcomes
        async with http.get(f"{srv.base}/metrics") as r:
            text = await r.text()
        assert 'boardcast_webhook_deliveries_total{outcome="failed"} 2.0' in text
        assert 'boardcast_webhook_deliveries_total{outcome="delivered"} 3.0' in text
        assert "boardcast_webhook_delivery_seconds_count 5.0" in text


async def test_backoff_grows_between_attempts(http, start_server):
    srv = await start_server(**{**FAST, "webhook_backoff_base_s": 0.2, "webhook_backoff_max_s": 0.8})
    async with receiver() as rec:
        rec.script = [503, 503, 503]
        bid = (await create_board(http, srv.base))["id"]
        rec.secret = (await create_webhook(http, srv.base, bid, rec.url))["secret"]
        await create_column(http, srv.base, bid)
        stamps: list[float] = []
        for n in range(1, 5):
            await rec.wait_for(n)
            stamps.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        # jitter keeps each wait in the upper half of 0.2, 0.4, 0.8 s (capped)
        assert 0.09 <= gaps[0] < 0.6, gaps
        assert 0.19 <= gaps[1] < 0.9, gaps
        assert 0.39 <= gaps[2] < 1.4, gaps


async def test_a_webhook_that_keeps_failing_is_disabled_and_the_admins_see_it(http, start_server, ws_client):
    srv = await start_server(**{**FAST, "webhook_max_failures": 3})
    async with receiver() as rec:
        rec.default = 500
        bid = (await create_board(http, srv.base))["id"]
        created = await create_webhook(http, srv.base, bid, rec.url)
        rec.secret = created["secret"]
        ws = await ws_client(srv, "json")
        joined = await ws.join(bid)
        assert joined["type"] == "joined"
        await create_column(http, srv.base, bid)  # seq 1
        event = await ws.expect("event", lambda m: m["event"]["kind"] == "webhook.disabled", timeout=20)
        assert event["seq"] == 2
        assert event["author"] == "00000000-0000-4000-8000-000000000000"  # the server itself
        assert event["event"] == {
            "kind": "webhook.disabled",
            "webhook_id": created["id"],
            "host": "127.0.0.1",
            "reason": "3 consecutive failed deliveries",
            "failures": 3,
        }
        assert len(rec.received) == 3
        hook = await get_json(http, _hooks(srv.base, bid, f"/{created['id']}"))
        assert hook["active"] is False
        assert hook["disabled_reason"] == "3 consecutive failed deliveries"
        assert hook["last_error"] == "HTTP 500" and hook["consecutive_failures"] == 3
        assert hook["delivered_seq"] == 0
        # an admin enables it again: it carries on from the event that failed, in order
        rec.default = 200
        async with http.patch(_hooks(srv.base, bid, f"/{created['id']}"), json={"active": True}) as r:
            assert r.status == 200, await r.text()
            again = await r.json()
        assert again["active"] is True and again["disabled_reason"] is None
        assert again["consecutive_failures"] == 0
        got = await rec.wait_for(5)
        assert [(r.body["seq"], r.status) for r in got[3:]] == [(1, 200), (2, 200)]
        assert got[4].body["kind"] == "webhook.disabled"
        # told once, not again after it came back
        await wait_until(lambda: _delivered_seq(http, srv.base, bid, created["id"], 2))
        snapshot_events = [m for m in ws.log if m.get("type") == "event"]
        assert [m["event"]["kind"] for m in snapshot_events].count("webhook.disabled") == 1
        async with http.get(f"{srv.base}/metrics") as r:
            assert "boardcast_webhooks_disabled_total 1.0" in await r.text()


async def test_a_webhook_failing_for_too_long_is_disabled(http, start_server, ws_client):
    srv = await start_server(**{**FAST, "webhook_max_failures": 1000, "webhook_max_failing_s": 0.3})
    async with receiver() as rec:
        rec.default = 502
        bid = (await create_board(http, srv.base))["id"]
        created = await create_webhook(http, srv.base, bid, rec.url)
        ws = await ws_client(srv, "msgpack")
        await ws.join(bid)
        await create_column(http, srv.base, bid)
        event = await ws.expect("event", lambda m: m["event"]["kind"] == "webhook.disabled", timeout=20)
        assert event["event"]["webhook_id"] == created["id"]
        assert event["event"]["reason"].startswith("no successful delivery for 0.3 s")
        assert event["event"]["failures"] >= 2


async def test_the_server_only_command_is_refused_from_clients(http, start_server, ws_client):
    srv = await start_server(**FAST)
    bid = (await create_board(http, srv.base))["id"]
    ws = await ws_client(srv, "json")
    await ws.join(bid)  # the dev user owns the board
    answer = await ws.cmd(
        bid,
        {
            "op": "webhook.report_disabled",
            "webhook_id": str(uuid.uuid4()),
            "host": "example.com",
            "reason": "forged",
            "failures": 1,
        },
    )
    assert answer["type"] == "error" and answer["code"] == "forbidden", answer
    snap = await get_json(http, f"{srv.base}/api/v1/boards/{bid}")
    assert snap["seq"] == 0


async def test_deleting_a_webhook_stops_deliveries_and_enabling_one_starts_at_its_cursor(http, start_server):
    srv = await start_server(**FAST)
    async with receiver() as rec:
        bid = (await create_board(http, srv.base))["id"]
        created = await create_webhook(http, srv.base, bid, rec.url)
        paused = await create_webhook(http, srv.base, bid, rec.url, active=False)
        assert paused["active"] is False
        col = await create_column(http, srv.base, bid)
        await rec.wait_for(1)
        async with http.delete(_hooks(srv.base, bid, f"/{created['id']}")) as r:
            assert r.status == 204
        async with http.get(_hooks(srv.base, bid, f"/{created['id']}")) as r:
            assert r.status == 404
        async with http.delete(_hooks(srv.base, bid, f"/{created['id']}")) as r:
            assert r.status == 404
        await _cards(http, srv.base, bid, col["id"], "after")
        # the paused one is enabled: it delivers both events from its cursor; the deleted none
        rec.secret = paused["secret"]
        async with http.patch(_hooks(srv.base, bid, f"/{paused['id']}"), json={"active": True}) as r:
            assert r.status == 200
        got = await rec.wait_for(3)
        assert [(r.body["webhook_id"], r.body["seq"]) for r in got[1:]] == [
            (paused["id"], 1),
            (paused["id"], 2),
        ]
        assert all(r.signature_ok for r in got[1:])


async def test_health_shows_the_backlog_of_a_node_that_does_not_deliver(http, start_server):
    srv = await start_server(**{**FAST, "webhook_dispatch": False})
    before = (await get_json(http, f"{srv.base}/health"))["webhooks"]
    assert before["dispatching"] is False and before["in_flight"] == 0
    bid = (await create_board(http, srv.base))["id"]
    await create_webhook(http, srv.base, bid, "http://127.0.0.1:9/hook")
    await create_webhook(http, srv.base, bid, "http://127.0.0.1:9/hook", active=False)
    col = await create_column(http, srv.base, bid)
    await _cards(http, srv.base, bid, col["id"], "a", "b")
    after = (await get_json(http, f"{srv.base}/health"))["webhooks"]
    assert after["behind"] == before["behind"] + 1
    assert after["events_behind"] == before["events_behind"] + 3
    assert after["disabled"] == before["disabled"] + 1


async def test_webhook_answers_match_the_documented_schemas(http, start_server):
    from tests.test_openapi import check_headers, fetch_spec, response_schema, validator

    srv = await start_server(**FAST)
    spec = await fetch_spec(http, srv)
    async with receiver() as rec:
        rec.script = [500]
        bid = (await create_board(http, srv.base))["id"]
        await create_column(http, srv.base, bid)
        path = "/api/v1/boards/{board_id}/webhooks"
        async with http.post(_hooks(srv.base, bid), json={"url": rec.url}) as r:
            created = await r.json()
            validator(spec, response_schema(spec, path, "post", 201)).validate(created)
            check_headers(spec, path, "post", r)
        await create_column(http, srv.base, bid)
        await rec.wait_for(2)
        await wait_until(lambda: _delivered_seq(http, srv.base, bid, created["id"], 2))
        hid = created["id"]
        for p, url in (
            (path, _hooks(srv.base, bid)),
            (path + "/{webhook_id}", _hooks(srv.base, bid, f"/{hid}")),
            (path + "/{webhook_id}/deliveries", _hooks(srv.base, bid, f"/{hid}/deliveries?limit=1")),
        ):
            async with http.get(url) as r:
                assert r.status == 200
                validator(spec, response_schema(spec, p, "get", 200)).validate(await r.json())
                check_headers(spec, p, "get", r)
        async with http.patch(_hooks(srv.base, bid, f"/{hid}"), json={"description": "x"}) as r:
            schema = response_schema(spec, path + "/{webhook_id}", "patch", 200)
            validator(spec, schema).validate(await r.json())
        params = spec["paths"][path + "/{webhook_id}/deliveries"]["get"]["parameters"]
        assert {p["name"]: p["schema"]["maximum"] for p in params if p["in"] == "query"} == {
            "limit": 200,
            "before": 2**63 - 1,
        }


async def test_the_documented_verification_example_verifies_real_deliveries(http, start_server):
    blocks = re.findall(r"```python\n(.*?)\n```", DOC, re.S)
    assert len(blocks) == 1
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)
    verify = namespace["verify"]
    srv = await start_server(**FAST)
    async with receiver() as rec:
        bid = (await create_board(http, srv.base))["id"]
        created = await create_webhook(http, srv.base, bid, rec.url)
        await create_column(http, srv.base, bid)
        [got] = await rec.wait_for(1)
    header = got.headers["Boardcast-Signature"]
    assert verify(created["secret"], header, got.raw)
    assert not verify(created["secret"], header, got.raw + b" ")
    assert not verify(created["secret"] + "x", header, got.raw)
    assert not verify(created["secret"], header, got.raw, tolerance_s=-1)  # too old
    assert not verify(created["secret"], "v1=" + header.split("v1=")[1], got.raw)  # no timestamp


async def test_a_hanging_receiver_does_not_hold_up_the_board(http, start_server, ws_client):
    srv = await start_server(**{**FAST, "webhook_timeout_s": 20.0, "webhook_lease_s": 45.0})
    async with receiver() as rec:
        held, release = asyncio.Event(), asyncio.Event()

        async def hang(request: Any) -> None:
            held.set()
            await release.wait()

        rec.before = hang
        bid = (await create_board(http, srv.base))["id"]
        await create_webhook(http, srv.base, bid, rec.url)
        col = await create_column(http, srv.base, bid)
        await asyncio.wait_for(held.wait(), 10)  # the first delivery is stuck in the receiver
        ws = await ws_client(srv, "json")
        await ws.join(bid)
        await _cards(http, srv.base, bid, col["id"], *(f"c{i}" for i in range(10)))
        ack = await ws.cmd(bid, {"op": "card.create", "column_id": col["id"], "title": "ws"})
        assert ack["type"] == "ack" and ack["seq"] == 12
        assert len(rec.received) == 0
        rec.before = None
        release.set()
        got = await rec.wait_for(12)
        assert [r.body["seq"] for r in got] == list(range(1, 13))
