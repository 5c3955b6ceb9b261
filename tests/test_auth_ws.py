"""Credentials on /ws (docs/ACCESS.md, Presenting credentials): query token, Bearer header and
cookie (with its Origin check), refusals as HTTP before the upgrade, and a token that expires
on an open connection: error frame, close 4003, refresh, reconnect and resume."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.identity import Account, login, register, ws_url_with_token
from tests.test_auth import (
    AUTH,
    TOKENS,
    bearer,
    claims_of,
    new_api_token,
    secret_of,
    set_cookies,
    sign_hs,
)
from tests.test_rest import Reply, assert_error, call
from tests.wsclient import WsClient

Connect = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def srv(start_server: ServerFactory) -> RunningServer:
    return await start_server(auth="jwt")


@pytest.fixture
async def ws(http: aiohttp.ClientSession) -> AsyncIterator[Connect]:
    """Connect JSON WebSocket clients; all closed at the end."""
    made: list[WsClient] = []

    async def connect(url: str, **kw: Any) -> WsClient:
        client = await WsClient.connect(http, url, "json", **kw)
        made.append(client)
        return client

    yield connect
    for client in made:
        await client.close()


async def refused_upgrade(http: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    """The HTTP status of a refused WebSocket handshake (fails if the upgrade succeeds)."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        ws = await http.ws_connect(url, protocols=("boardcast.v1.json",), **kw)
        await ws.close()
    return exc.value.status


async def raw_handshake(
    http: aiohttp.ClientSession, srv: RunningServer, query: str = "", **headers: str
) -> Reply:
    """A real upgrade request sent as plain HTTP, so the refusal's body can be read."""
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": "boardcast.v1.json",
        **headers,
    }
    async with asyncio.timeout(10):
        return await call(http, "GET", f"{srv.base}/ws{query}", headers=upgrade)


async def board_with_column(http: aiohttp.ClientSession, base: str, token: str) -> tuple[str, str]:
    r = await call(http, "POST", f"{base}/api/v1/boards", json={"title": "Auth WS"}, headers=bearer(token))
    assert r.status == 201, r.body
    bid = r.body["id"]
    r = await call(
        http, "POST", f"{base}/api/v1/boards/{bid}/columns", json={"title": "Todo"}, headers=bearer(token)
    )
    assert r.status == 201, r.body
    return bid, r.body["id"]


async def cookie_session(http: aiohttp.ClientSession, base: str, acct: Account) -> str:
    """Log in with session=cookie; the Cookie header a browser would then send."""
    r = await call(
        http,
        "POST",
        f"{base}{AUTH}/login",
        json={"email": acct.email, "password": acct.password, "session": "cookie"},
    )
    assert r.status == 200, r.body
    cookies = set_cookies(r)
    return "; ".join(f"{name}={cookies[name].value}" for name in ("boardcast_access", "boardcast_csrf"))


def host_origin(srv: RunningServer) -> str:
    return srv.base  # http://127.0.0.1:<port>, the Host aiohttp sends


# ------------------------------------------------------------------ accepted credentials


async def test_access_token_in_the_query(http, srv, ws):
    acct = await register(http, srv.base)
    bid, _ = await board_with_column(http, srv.base, acct.access_token)
    client = await ws(ws_url_with_token(srv.ws_url, acct.access_token))
    assert client.welcome["user_id"] == acct.user_id
    exp = claims_of(acct.access_token)["exp"]
    assert abs(client.welcome["expires_at_ms"] - exp * 1000) <= 1000, client.welcome
    joined = await client.join(bid)
    assert joined["type"] == "joined", joined


async def test_bearer_header(http, srv, ws):
    acct = await register(http, srv.base)
    client = await ws(srv.ws_url, headers=acct.headers)
    assert client.welcome["user_id"] == acct.user_id
    assert "expires_at_ms" in client.welcome


async def test_cookie_with_an_origin_of_the_same_host(http, srv, ws):
    acct = await register(http, srv.base)
    bid, _ = await board_with_column(http, srv.base, acct.access_token)
    cookie = await cookie_session(http, srv.base, acct)
    client = await ws(srv.ws_url, headers={"Cookie": cookie, "Origin": host_origin(srv)})
    assert client.welcome["user_id"] == acct.user_id
    assert (await client.join(bid))["type"] == "joined"


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "https://127.0.0.1.evil.example", "http://127.0.0.1", "null", None]
)
async def test_cookie_upgrade_from_a_foreign_or_missing_origin_is_refused(http, srv, origin):
    # The contract says "refused" without a status; read as 403 forbidden (the credentials are
    # good, the page using them is not ours).
    acct = await register(http, srv.base)
    headers = {"Cookie": await cookie_session(http, srv.base, acct)}
    if origin is not None:
        headers["Origin"] = origin
    assert await refused_upgrade(http, srv.ws_url, headers=headers) == 403
    assert_error(await raw_handshake(http, srv, **headers), 403, "forbidden")


async def test_the_origin_check_is_for_cookies_only(http, srv, ws):
    acct = await register(http, srv.base)
    client = await ws(srv.ws_url, headers={**acct.headers, "Origin": "http://evil.example"})
    assert client.welcome["user_id"] == acct.user_id


async def test_api_token_in_query_and_header(http, srv, ws):
    acct = await register(http, srv.base)
    bid, _ = await board_with_column(http, srv.base, acct.access_token)
    token = (await new_api_token(http, srv.base, acct))["token"]
    for kw in ({"url": ws_url_with_token(srv.ws_url, token)}, {"url": srv.ws_url, "headers": bearer(token)}):
        client = await ws(kw.pop("url"), **kw)
        assert client.welcome["user_id"] == acct.user_id
        # a token that does not expire: no expires_at_ms
        assert "expires_at_ms" not in client.welcome, client.welcome
        assert (await client.join(bid))["type"] == "joined"


async def test_an_expiring_api_token_announces_its_expiry(http, srv, ws):
    acct = await register(http, srv.base)
    token = (await new_api_token(http, srv.base, acct, expires_in_days=1))["token"]
    client = await ws(ws_url_with_token(srv.ws_url, token))
    expected_ms = (time.time() + 86400) * 1000
    assert abs(client.welcome["expires_at_ms"] - expected_ms) < 3_600_000, client.welcome


# ------------------------------------------------------------------ refused before the upgrade


async def test_no_credentials_is_401_before_the_upgrade(http, srv):
    assert await refused_upgrade(http, srv.ws_url) == 401
    reply = await raw_handshake(http, srv)
    assert_error(reply, 401, "unauthorized")
    assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "bcp_unknown0123456789abcdef", "forged", "refresh"])
async def test_invalid_tokens_are_401_before_the_upgrade(http, srv, token):
    acct = await register(http, srv.base)
    if token == "forged":
        token = sign_hs(claims_of(acct.access_token), "not-the-secret-" + "z" * 50)
    elif token == "refresh":
        token = acct.refresh_token
    assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, token)) == 401
    assert await refused_upgrade(http, srv.ws_url, headers=bearer(token)) == 401
    assert_error(await raw_handshake(http, srv, f"?access_token={token}"), 401, "unauthorized")


async def test_an_expired_token_is_401_token_expired_before_the_upgrade(http, srv):
    acct = await register(http, srv.base)
    now = int(time.time())
    expired = sign_hs({**claims_of(acct.access_token), "iat": now - 7200, "exp": now - 3600}, secret_of(srv))
    assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, expired)) == 401
    assert await refused_upgrade(http, srv.ws_url, headers=bearer(expired)) == 401
    assert_error(await raw_handshake(http, srv, f"?access_token={expired}"), 401, "token_expired")


async def test_revoked_credentials_are_401_before_the_upgrade(http, srv):
    acct = await register(http, srv.base)
    api = await new_api_token(http, srv.base, acct)
    r = await call(http, "DELETE", f"{srv.base}{TOKENS}/{api['id']}", headers=acct.headers)
    assert r.status == 204, r.body
    assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, api["token"])) == 401
    r = await call(http, "POST", f"{srv.base}{AUTH}/logout", json={"refresh_token": acct.refresh_token})
    assert r.status == 204, r.body
    assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, acct.access_token)) == 401


# ------------------------------------------------------------------ expiry on an open connection


async def wait_closed(client: WsClient, timeout: float = 10) -> int | None:
    async with asyncio.timeout(timeout):
        await client.closed.wait()
    return client.ws.close_code


async def test_the_connection_is_closed_4003_when_its_token_expires(http, start_server, ws):
    srv = await start_server(auth="jwt", access_token_ttl_s=2)
    acct = await register(http, srv.base)
    api_token = (await new_api_token(http, srv.base, acct))["token"]
    fresh = await login(http, srv.base, acct.email)
    expiring = await ws(ws_url_with_token(srv.ws_url, fresh["access_token"]))
    lasting = await ws(ws_url_with_token(srv.ws_url, api_token))
    expires_at_ms = expiring.welcome["expires_at_ms"]
    assert abs(expires_at_ms - claims_of(fresh["access_token"])["exp"] * 1000) <= 1000

    err = await expiring.expect("error", lambda m: m.get("code") == "token_expired", timeout=10)
    arrived_ms = time.time() * 1000
    assert "rid" not in err
    assert expires_at_ms - 250 <= arrived_ms <= expires_at_ms + 2000, (arrived_ms, expires_at_ms)
    assert await wait_closed(expiring) == 4003
    # a token without expiry keeps its connection
    await lasting.ping()
    assert not lasting.closed.is_set()


async def test_refresh_reconnect_and_resume_after_expiry(http, start_server, ws):
    srv = await start_server(auth="jwt", access_token_ttl_s=2)
    acct = await register(http, srv.base)
    api_token = (await new_api_token(http, srv.base, acct, name="writer"))["token"]
    bid, col = await board_with_column(http, srv.base, api_token)
    writer = await ws(ws_url_with_token(srv.ws_url, api_token))
    await writer.join(bid)

    session = await login(http, srv.base, acct.email)
    reader = await ws(ws_url_with_token(srv.ws_url, session["access_token"]))
    since = (await reader.join(bid))["seq"]
    seen = await writer.cmd(bid, {"op": "card.create", "column_id": col, "title": "seen live"})
    assert seen["type"] == "ack", seen
    since = (await reader.wait_seq(bid, seen["seq"]))[-1]["seq"]

    await reader.expect("error", lambda m: m.get("code") == "token_expired", timeout=10)
    assert await wait_closed(reader) == 4003

    # another client changes the board while the reader is away
    rids = [
        await writer.send_cmd(bid, {"op": "card.create", "column_id": col, "title": f"missed {i}"})
        for i in range(3)
    ]
    answers = await writer.wait_answers(rids)
    assert all(a["type"] == "ack" for a in answers.values()), answers
    last = max(a["seq"] for a in answers.values())
    missed = [e for e in await writer.wait_seq(bid, last) if e["seq"] > since]
    assert [e["seq"] for e in missed] == list(range(since + 1, since + 4))

    # the old token is refused; refresh, reconnect, resume
    assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, session["access_token"])) == 401
    r = await call(
        http, "POST", f"{srv.base}{AUTH}/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert r.status == 200, r.body
    again = await ws(ws_url_with_token(srv.ws_url, r.body["access_token"]))
    assert again.welcome["user_id"] == acct.user_id
    resumed = await again.join(bid, since_seq=since)
    assert resumed["type"] == "joined", resumed
    assert "snapshot" not in resumed
    assert resumed["seq"] == last
    assert resumed["events"] == missed
    await again.ping()
    assert again.events(bid) == [], "events arrived outside the joined reply"


# ------------------------------------------------------------------ revoked on an open connection


async def test_logout_and_token_revocation_close_open_connections_4004(http, start_server, ws):
    # Checked once per heartbeat, on whichever node holds the connection.
    srv = await start_server(auth="jwt", heartbeat_s=0.3, idle_timeout_s=30)
    acct = await register(http, srv.base)
    other = await login(http, srv.base, acct.email)  # a second session of the same user
    token = await new_api_token(http, srv.base, acct)
    kept_token = await new_api_token(http, srv.base, acct, name="kept")
    by_session = await ws(ws_url_with_token(srv.ws_url, acct.access_token))
    by_other_session = await ws(ws_url_with_token(srv.ws_url, other["access_token"]))
    by_token = await ws(ws_url_with_token(srv.ws_url, token["token"]))
    by_kept_token = await ws(ws_url_with_token(srv.ws_url, kept_token["token"]))

    r = await call(http, "POST", f"{srv.base}{AUTH}/logout", headers=acct.headers)
    assert r.status == 204, r.body
    err = await by_session.expect("error", lambda m: m.get("code") == "unauthorized", timeout=10)
    assert err["details"] == {"reason": "revoked"}
    assert await wait_closed(by_session) == 4004

    r = await call(http, "DELETE", f"{srv.base}{TOKENS}/{token['id']}", headers=bearer(other["access_token"]))
    assert r.status == 204, r.body
    await by_token.expect("error", lambda m: m.get("code") == "unauthorized", timeout=10)
    assert await wait_closed(by_token) == 4004

    # the other session and the other token were not touched
    for client in (by_other_session, by_kept_token):
        await client.ping()
        assert not client.closed.is_set()
