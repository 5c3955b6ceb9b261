"""The auth rate-limit tier (docs/ACCESS.md, Rate limiting): login, register, refresh and
password change share one budget per client address, login also one per email; refusals are
429 `rate_limited` with Retry-After and RateLimit-* headers, shared through Redis."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict

from server.config import Rate
from tests.conftest import RunningServer, ServerFactory, free_port
from tests.identity import PASSWORD, Account, register, unique_email, ws_url_with_token
from tests.test_auth import AUTH, ME
from tests.test_rest import Reply, assert_error, call

LOCALHOST = (ipaddress.ip_network("127.0.0.1/32"),)
BUDGET = Rate(5, 600)  # five attempts, then one more every two minutes


@pytest.fixture
async def accounts(start_server: ServerFactory) -> RunningServer:
    """An unlimited server on the same database, so making accounts spends no budget."""
    return await start_server(auth="jwt")


@pytest.fixture
def limited(start_server: ServerFactory, redis_prefix: str) -> ServerFactory:
    """Start a server with REST limits on, its own bucket prefix, and a small auth budget."""

    async def start(**overrides: Any) -> RunningServer:
        return await start_server(
            auth="jwt",
            rate_limit=True,
            rate_auth=BUDGET,
            redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
            **overrides,
        )

    return start


def client_ip(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def login(
    http: aiohttp.ClientSession, base: str, email: str, password: str = PASSWORD, **headers: str
) -> Reply:
    return await call(
        http,
        "POST",
        f"{base}{AUTH}/login",
        json={"email": email, "password": password},
        headers=headers or None,
    )


def assert_limited(reply: Reply, limit: int = BUDGET.count) -> int:
    """A 429 as documented; returns Retry-After in seconds."""
    err = assert_error(reply, 429, "rate_limited")
    retry_after = int(reply.headers["Retry-After"])
    assert 1 <= retry_after <= BUDGET.period_s / BUDGET.count + 1, retry_after
    assert err["details"]["tier"] == "auth", err
    # details may be exact; the header is whole seconds, rounded up
    assert 0 < err["details"]["retry_after_s"] <= retry_after < err["details"]["retry_after_s"] + 1, err
    assert int(reply.headers["RateLimit-Limit"]) == limit
    assert int(reply.headers["RateLimit-Remaining"]) == 0
    assert retry_after <= int(reply.headers["RateLimit-Reset"]) <= BUDGET.period_s
    return retry_after


def assert_not_limited(reply: Reply) -> None:
    assert reply.status != 429, reply.body
    assert reply.status in (200, 201, 204, 401), (reply.status, reply.body)


async def test_the_sixth_login_from_one_client_is_refused_even_with_the_right_password(
    http, accounts, limited, redis_url, redis_prefix
):
    acct = await register(http, accounts.base)
    srv = await limited()
    remaining = []
    for i in range(BUDGET.count):
        r = await login(http, srv.base, acct.email, PASSWORD if i % 2 else "wrong password")
        assert r.status == (200 if i % 2 else 401), r.body
        assert int(r.headers["RateLimit-Limit"]) == BUDGET.count
        assert 0 <= int(r.headers["RateLimit-Reset"]) <= BUDGET.period_s
        remaining.append(int(r.headers["RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]

    assert_limited(await login(http, srv.base, acct.email))
    # per client: another account from the same address is refused too
    other = await register(http, accounts.base)
    assert_limited(await login(http, srv.base, other.email))
    # only the auth tier: the signed-in user's reads go on
    assert (await call(http, "GET", f"{srv.base}{ME}", headers=acct.headers)).status == 200

    # the buckets live in Redis under the server's prefix
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}-*")]
    finally:
        await client.aclose()
    assert keys, "no rate limit keys under the configured prefix"


async def test_login_for_one_email_is_limited_across_client_addresses(http, accounts, limited):
    acct = await register(http, accounts.base)
    srv = await limited(trusted_proxies=LOCALHOST)
    for i in range(BUDGET.count):
        # Reading of the contract: "per email" means per account, whatever the letter case.
        email = acct.email.upper() if i % 2 else acct.email
        r = await login(http, srv.base, email, "wrong password", **client_ip(f"203.0.113.{i + 1}"))
        assert_not_limited(r)
        assert r.status == 401
    # a fresh address, the right password: still refused, the email's budget is spent
    # (its RateLimit-* headers describe the bucket that refused it: nothing remaining)
    assert_limited(await login(http, srv.base, acct.email, **client_ip("203.0.113.100")))
    # the addresses themselves are not used up: one of them signs in to another account
    other = await register(http, accounts.base)
    assert (await login(http, srv.base, other.email, **client_ip("203.0.113.1"))).status == 200


async def test_per_address_limit_follows_x_forwarded_for_from_a_trusted_proxy(http, accounts, limited):
    acct = await register(http, accounts.base)
    srv = await limited(trusted_proxies=LOCALHOST)
    for _ in range(BUDGET.count):
        email = unique_email("nobody")  # different emails: only the address is shared
        assert_not_limited(await login(http, srv.base, email, "x" * 8, **client_ip("198.51.100.7")))
    assert_limited(await login(http, srv.base, acct.email, **client_ip("198.51.100.7")))
    # read from the right, skipping trusted proxies: "spoofed, real, proxy" is the real client
    assert_limited(await login(http, srv.base, acct.email, **client_ip("192.0.2.1, 198.51.100.7, 127.0.0.1")))
    # another client behind the same proxy is not affected
    assert (await login(http, srv.base, acct.email, **client_ip("198.51.100.8"))).status == 200


async def test_x_forwarded_for_split_over_two_header_lines_is_read_as_one_list(http, accounts, limited):
    # RFC 9110 5.3: repeated field lines mean the same as one comma-joined line. Some proxies
    # (HAProxy's "option forwardfor") add their own line after the client's; the client's line
    # is then the leftmost part, which it chose, and must not pick the bucket.
    acct = await register(http, accounts.base)
    srv = await limited(trusted_proxies=LOCALHOST)
    url = f"{srv.base}{AUTH}/login"
    for i in range(BUDGET.count + 1):
        headers = CIMultiDict([("X-Forwarded-For", f"192.0.2.{i + 1}"), ("X-Forwarded-For", "203.0.113.50")])
        email, password = (unique_email("nobody"), "x" * 8) if i < BUDGET.count else (acct.email, PASSWORD)
        r = await call(http, "POST", url, json={"email": email, "password": password}, headers=headers)
        if i < BUDGET.count:
            assert_not_limited(r)
    assert_limited(r)


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(http, accounts, limited):
    acct = await register(http, accounts.base)
    srv = await limited()  # no trusted proxies: the TCP peer is the client
    for i in range(BUDGET.count):
        r = await login(http, srv.base, unique_email("nobody"), "x" * 8, **client_ip(f"198.51.100.{i + 1}"))
        assert_not_limited(r)
    assert_limited(await login(http, srv.base, acct.email, **client_ip("198.51.100.200")))


async def test_register_refresh_and_login_share_the_auth_budget(http, accounts, limited):
    srv = await limited()
    first = await register(http, srv.base)  # 1
    second = await register(http, srv.base)  # 2
    r = await call(
        http, "POST", f"{srv.base}{AUTH}/refresh", json={"refresh_token": first.refresh_token}
    )  # 3
    assert r.status == 200, r.body
    rotated = r.body["refresh_token"]
    r = await call(
        http, "POST", f"{srv.base}{AUTH}/refresh", json={"refresh_token": second.refresh_token}
    )  # 4
    assert r.status == 200, r.body
    assert (await login(http, srv.base, first.email)).status == 200  # 5

    r = await call(
        http,
        "POST",
        f"{srv.base}{AUTH}/register",
        json={"email": unique_email(), "password": PASSWORD, "name": "late"},
    )
    assert_limited(r)
    assert_limited(await call(http, "POST", f"{srv.base}{AUTH}/refresh", json={"refresh_token": rotated}))
    assert_limited(await login(http, srv.base, second.email))
    # the refused refresh did not spend the token: it still works on an unlimited node
    r = await call(http, "POST", f"{accounts.base}{AUTH}/refresh", json={"refresh_token": rotated})
    assert r.status == 200, r.body


async def test_password_changes_count_in_the_auth_tier(http, accounts, limited):
    acct: Account = await register(http, accounts.base)
    srv = await limited()
    url = f"{srv.base}/api/v1/users/me/password"
    for _ in range(BUDGET.count):
        r = await call(
            http,
            "POST",
            url,
            json={"current_password": "not it at all", "new_password": "another password"},
            headers=acct.headers,
        )
        assert_error(r, 401, "unauthorized")
    r = await call(
        http,
        "POST",
        url,
        json={"current_password": PASSWORD, "new_password": "another password"},
        headers=acct.headers,
    )
    assert_limited(r)
    # refused means not done
    assert (await login(http, accounts.base, acct.email)).status == 200


async def test_guessing_tokens_is_throttled_like_guessing_passwords(http, accounts, limited):
    acct = await register(http, accounts.base)
    srv = await limited()
    guesses = [
        await call(http, "GET", f"{srv.base}{ME}", headers={"Authorization": f"Bearer guess-{i}"})
        for i in range(BUDGET.count)
    ]
    assert [r.status for r in guesses] == [401] * BUDGET.count, [r.body for r in guesses]
    r = await call(http, "GET", f"{srv.base}{ME}", headers={"Authorization": "Bearer one-more"})
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    # the address's sign-in budget is spent by the guesses
    assert_error(await login(http, srv.base, acct.email), 429, "rate_limited")


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_auth_attempts_fail_closed_when_redis_does_not_answer(http, accounts, limited, silent_redis):
    acct = await register(http, accounts.base)
    srv = await limited(redis_url=silent_redis)
    t0 = time.perf_counter()
    r = await login(http, srv.base, acct.email)
    assert_error(r, 503, "unavailable")
    assert int(r.headers["Retry-After"]) >= 1
    assert time.perf_counter() - t0 < 5  # the decision gives up after about 250 ms
    r = await call(http, "POST", f"{srv.base}{AUTH}/refresh", json={"refresh_token": acct.refresh_token})
    assert_error(r, 503, "unavailable")
    # reads are served, without limits and without the headers
    r = await call(http, "GET", f"{srv.base}{ME}", headers=acct.headers)
    assert r.status == 200, r.body
    assert "RateLimit-Limit" not in r.headers
    # the refused refresh spent nothing
    r = await call(http, "POST", f"{accounts.base}{AUTH}/refresh", json={"refresh_token": acct.refresh_token})
    assert r.status == 200, r.body


@pytest.fixture(params=["hanging", "refusing"])
def redis_down(request: pytest.FixtureRequest, silent_redis: str) -> str:
    """A Redis URL that does not work: a server that never answers, or a port nobody listens on."""
    return silent_redis if request.param == "hanging" else f"redis://127.0.0.1:{free_port()}/0"


async def test_bad_credentials_get_401_not_503_while_redis_is_down(http, accounts, limited, redis_down):
    # Bad credentials are counted as sign-in attempts of the client address. While that count
    # cannot be made, the caller must still hear what is wrong with its credentials: a 503 would
    # tell a signed-out client to retry a token that will never work again.
    acct = await register(http, accounts.base)
    signed_out = await register(http, accounts.base)
    r = await call(
        http, "POST", f"{accounts.base}{AUTH}/logout", json={"refresh_token": signed_out.refresh_token}
    )
    assert r.status == 204, r.body
    made = await call(http, "POST", f"{accounts.base}{ME}/tokens", json={"name": "ci"}, headers=acct.headers)
    assert made.status == 201, made.body
    api_token = made.body["token"]
    gone = await call(http, "DELETE", f"{accounts.base}{ME}/tokens/{made.body['id']}", headers=acct.headers)
    assert gone.status == 204, gone.body

    srv = await limited(redis_url=redis_down)
    bad = {
        "malformed": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        "invalid": {"Authorization": "Bearer not-a-token"},
        "revoked": signed_out.headers,
        "revoked API token": {"Authorization": f"Bearer {api_token}"},
    }
    for what, headers in bad.items():
        for method, path, body in (("GET", ME, None), ("POST", "/api/v1/boards", {"title": "no"})):
            r = await call(http, method, f"{srv.base}{path}", json=body, headers=headers)
            assert_error(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), (what, method)
            assert "Retry-After" not in r.headers, (what, method)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(ws_url_with_token(srv.ws_url, "not-a-token"), protocols=("boardcast.v1.json",))
    assert refused.value.status == 401

    # good credentials are still served (fail open), sign-in is still refused (fail closed)
    r = await call(http, "GET", f"{srv.base}{ME}", headers=acct.headers)
    assert r.status == 200 and r.body["id"] == acct.user_id, r.body
    assert_error(await login(http, srv.base, acct.email), 503, "unavailable")
