"""Accounts and credentials against a real server in jwt mode (docs/ACCESS.md): register,
login, refresh rotation and reuse detection, logout, password change, cookie sessions with
CSRF, personal API tokens, and every way a bad or expired token is refused."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from http.cookies import Morsel, SimpleCookie
from typing import Any

import aiohttp
import argon2
import asyncpg
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from server.keys import SETTINGS
from tests.conftest import RunningServer, ServerFactory
from tests.identity import PASSWORD, Account, register, unique_email
from tests.test_rest import Reply, assert_error, call

AUTH = "/api/v1/auth"
ME = "/api/v1/users/me"
TOKENS = "/api/v1/users/me/tokens"
BOARDS = "/api/v1/boards"
BAD_LOGIN = "invalid email or password"


@pytest.fixture
async def srv(start_server: ServerFactory) -> RunningServer:
    return await start_server(auth="jwt")


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's default jar ignores IP hosts)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


# ------------------------------------------------------------------ helpers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return claims


def _segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def sign_hs(claims: dict[str, Any], secret: str, alg: str = "HS256", header_alg: str | None = None) -> str:
    """A JWT signed with HMAC (SHA-256 for HS256, SHA-512 for HS512); ``header_alg`` lies
    about the algorithm in the header."""
    signing_input = f"{_segment({'alg': header_alg or alg, 'typ': 'JWT'})}.{_segment(claims)}"
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(sig)}"


def sign_rs256(claims: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = f"{_segment({'alg': 'RS256', 'typ': 'JWT'})}.{_segment(claims)}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(sig)}"


def unsigned(claims: dict[str, Any], alg: str = "none", signature: str = "") -> str:
    return f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(claims)}.{signature}"


def flip_char(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def secret_of(server: RunningServer) -> str:
    return server.app[SETTINGS].secret


def set_cookies(reply: Reply) -> dict[str, Morsel[str]]:
    """Every Set-Cookie of a response, by cookie name."""
    out: dict[str, Morsel[str]] = {}
    for raw in reply.headers.getall("Set-Cookie", []):
        jar: SimpleCookie = SimpleCookie()
        jar.load(raw)
        out.update(jar)
    return out


def jar_value(session: aiohttp.ClientSession, url: str, name: str) -> str | None:
    morsel = session.cookie_jar.filter_cookies(URL(url)).get(name)
    return morsel.value if morsel is not None else None


def as_datetime(value: Any) -> dt.datetime:
    """Times are RFC 3339 strings in UTC (docs/ACCESS.md)."""
    assert isinstance(value, str), value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.utcoffset() == dt.timedelta(0), value
    return parsed


async def me(http: aiohttp.ClientSession, base: str, token: str) -> Reply:
    return await call(http, "GET", f"{base}{ME}", headers=bearer(token))


async def login(
    http: aiohttp.ClientSession, base: str, email: str, password: str = PASSWORD, **kw: Any
) -> Reply:
    return await call(http, "POST", f"{base}{AUTH}/login", json={"email": email, "password": password, **kw})


async def signed_in(
    http: aiohttp.ClientSession, base: str, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    """A new session (login) of an existing account: its token body."""
    r = await login(http, base, email, password)
    assert r.status == 200, r.body
    body: dict[str, Any] = r.body
    return body


async def refresh(http: aiohttp.ClientSession, base: str, refresh_token: str) -> Reply:
    return await call(http, "POST", f"{base}{AUTH}/refresh", json={"refresh_token": refresh_token})


async def new_api_token(
    http: aiohttp.ClientSession, base: str, owner: Account, name: str = "ci", **extra: Any
) -> dict[str, Any]:
    r = await call(http, "POST", f"{base}{TOKENS}", json={"name": name, **extra}, headers=owner.headers)
    assert r.status == 201, r.body
    body: dict[str, Any] = r.body
    return body


def assert_unauthorized(reply: Reply, code: str = "unauthorized") -> dict[str, Any]:
    return assert_error(reply, 401, code)


def assert_token_body(body: dict[str, Any], email: str, name: str | None = None) -> None:
    assert set(body) == {"user", "access_token", "refresh_token", "token_type", "expires_in"}, body
    assert set(body["user"]) == {"id", "email", "name"}, body["user"]
    uuid.UUID(body["user"]["id"])
    assert body["user"]["email"].lower() == email.lower()
    if name is not None:
        assert body["user"]["name"] == name
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("bcr_")
    assert body["access_token"].count(".") == 2


# ------------------------------------------------------------------ register


async def test_register_answers_201_with_the_user_and_a_token_session(http, srv):
    email = unique_email("reg")
    r = await call(
        http, "POST", f"{srv.base}{AUTH}/register", json={"email": email, "password": PASSWORD, "name": "Reg"}
    )
    assert r.status == 201, r.body
    assert_token_body(r.body, email, "Reg")
    got = await me(http, srv.base, r.body["access_token"])
    assert got.status == 200, got.body
    assert got.body == r.body["user"]


async def test_access_token_is_an_hs256_jwt_with_the_documented_claims(http, srv):
    acct = await register(http, srv.base)
    head = json.loads(b64url_decode(acct.access_token.split(".")[0]))
    assert head["alg"] == "HS256"
    claims = claims_of(acct.access_token)
    assert claims["iss"] == "boardcast" and claims["aud"] in ("boardcast", ["boardcast"])
    assert claims["sub"] == acct.user_id
    assert claims["name"] == acct.name
    uuid.UUID(str(claims["sid"]))
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 60
    # and the signature is HMAC-SHA256 with BOARDCAST_SECRET
    signing_input, _, sig = acct.access_token.rpartition(".")
    expected = hmac.new(secret_of(srv).encode(), signing_input.encode(), hashlib.sha256).digest()
    assert b64url_decode(sig) == expected


async def test_email_is_unique_regardless_of_case(http, srv):
    stem = uuid.uuid4().hex[:8]
    first = await register(http, srv.base, email=f"Ann-{stem}@Example.Test")
    r = await call(
        http,
        "POST",
        f"{srv.base}{AUTH}/register",
        json={"email": f"ann-{stem}@example.test", "password": PASSWORD, "name": "Other Ann"},
    )
    assert_error(r, 409, "conflict")
    # one account: the other spelling signs in to it
    body = await signed_in(http, srv.base, f"ANN-{stem}@EXAMPLE.TEST")
    assert body["user"]["id"] == first.user_id


def _long_email(length: int) -> str:
    """A plain address of exactly ``length`` characters (domain labels under 64)."""
    local = f"long-{uuid.uuid4().hex[:8]}"
    room = length - len(local) - len("@") - len(".test")
    labels = []
    while room > 63:
        labels.append("d" * 60)
        room -= 61
    labels.append("d" * room)
    email = f"{local}@{'.'.join(labels)}.test"
    assert len(email) == length
    return email


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("no at sign", {"email": "no-at-sign.example.test"}),
        ("two at signs", {"email": "a@b@example.test"}),
        ("email too short", {"email": "@b"}),
        ("email 255 characters", {"email": "LONG255"}),
        ("email not a string", {"email": 12345}),
        ("password 7 characters", {"password": "x" * 7}),
        ("password 257 characters", {"password": "x" * 257}),
        ("password missing", {"password": None}),
        ("name missing", {"name": None}),
        ("name empty", {"name": ""}),
        ("name 201 characters", {"name": "n" * 201}),
        ("unknown field", {"role": "admin"}),
        ("unknown session kind", {"session": "jwt"}),
        ("email missing", {"email": None}),
    ],
)
async def test_register_refuses_bad_bodies_with_400_and_creates_nothing(http, srv, case, change):
    email = unique_email("bad")
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "name": "Bad", **change}
    if body["email"] == "LONG255":
        body["email"] = _long_email(255)
    body = {k: v for k, v in body.items() if v is not None}
    r = await call(http, "POST", f"{srv.base}{AUTH}/register", json=body)
    assert_error(r, 400, "bad_request")
    if body.get("email") == email:
        # nothing was stored: the address is still free
        await register(http, srv.base, email=email)


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "nul\x00byte@example.test"), ("name", "Nul\x00Name"), ("password", "pass\x00word")],
)
async def test_register_refuses_nul_characters_without_a_server_error(http, srv, field, value):
    # PostgreSQL cannot store NUL in text: refuse it up front (400), never fail with a 500.
    body = {"email": unique_email("nul"), "password": PASSWORD, "name": "Nul", field: value}
    r = await call(http, "POST", f"{srv.base}{AUTH}/register", json=body)
    if field == "password" and r.status == 201:
        # a NUL in a password never reaches the database (only its hash does): accepting it is fine
        assert (await login(http, srv.base, body["email"], value)).status == 200
        return
    assert_error(r, 400, "bad_request")


async def test_password_length_counts_characters_not_bytes(http, srv):
    r = await call(
        http,
        "POST",
        f"{srv.base}{AUTH}/register",
        json={"email": unique_email("short"), "password": "\u00e9" * 7, "name": "x"},
    )
    assert_error(r, 400, "bad_request")  # 7 characters, 14 bytes
    wide = "\U0001f600" * 256  # 256 characters, 1024 bytes
    acct = await register(http, srv.base, password=wide)
    assert (await signed_in(http, srv.base, acct.email, wide))["user"]["id"] == acct.user_id


async def test_concurrent_registrations_of_one_email_make_one_account(http, srv):
    stem = f"race-{uuid.uuid4().hex[:8]}"
    emails = [f"{stem}@example.test", f"{stem.upper()}@example.test", f"{stem}@EXAMPLE.TEST"] * 2

    async def attempt(email: str) -> Reply:
        body = {"email": email, "password": PASSWORD, "name": "Race"}
        return await call(http, "POST", f"{srv.base}{AUTH}/register", json=body)

    replies = await asyncio.gather(*(attempt(e) for e in emails))
    assert sorted(r.status for r in replies) == [201] + [409] * (len(emails) - 1), [r.body for r in replies]
    for r in replies:
        if r.status == 409:
            assert_error(r, 409, "conflict")


@pytest.mark.parametrize("variant", ["{} ", " {}", "{}\n", "\t{}", "{}\r\n"])
async def test_an_email_with_surrounding_whitespace_is_not_a_second_account(http, srv, variant):
    acct = await register(http, srv.base)
    r = await call(
        http,
        "POST",
        f"{srv.base}{AUTH}/register",
        json={"email": variant.format(acct.email), "password": PASSWORD, "name": "Twin"},
    )
    # refused as a bad address (400) or as the same account (409); never a look-alike twin
    assert r.status in (400, 409), (r.status, r.body)
    assert_error(r, r.status, "bad_request" if r.status == 400 else "conflict")


async def test_register_refuses_a_body_that_is_not_json(http, srv):
    r = await call(
        http,
        "POST",
        f"{srv.base}{AUTH}/register",
        data=b"email=a@b.test&password=12345678",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(r, 400, "bad_request")


async def test_register_accepts_the_documented_bounds(http, srv):
    email = _long_email(254)
    acct = await register(http, srv.base, email=email, name="n" * 200, password="p" * 8)
    assert (await signed_in(http, srv.base, email, "p" * 8))["user"]["id"] == acct.user_id
    long_pw = "q" * 256
    other = await register(http, srv.base, name="x", password=long_pw)
    assert (await signed_in(http, srv.base, other.email, long_pw))["user"]["id"] == other.user_id


async def test_password_is_stored_as_an_argon2id_hash(http, srv, database_url):
    acct = await register(http, srv.base)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT password_hash, users::text AS whole FROM users WHERE id = $1", uuid.UUID(acct.user_id)
        )
    finally:
        await conn.close()
    assert row is not None
    stored: str = row["password_hash"]
    assert stored.startswith("$argon2id$"), stored
    assert PASSWORD not in row["whole"]
    assert argon2.PasswordHasher().verify(stored, PASSWORD)


# ------------------------------------------------------------------ login and me


async def test_login_with_the_right_password_opens_a_new_session(http, srv):
    acct = await register(http, srv.base, name="Lou")
    r = await login(http, srv.base, acct.email)
    assert r.status == 200, r.body
    assert_token_body(r.body, acct.email, "Lou")
    assert r.body["user"]["id"] == acct.user_id
    assert claims_of(r.body["access_token"])["sid"] != claims_of(acct.access_token)["sid"]
    assert r.body["refresh_token"] != acct.refresh_token
    got = await me(http, srv.base, r.body["access_token"])
    assert got.status == 200 and got.body == {
        "id": acct.user_id,
        "email": r.body["user"]["email"],
        "name": "Lou",
    }


async def test_wrong_password_and_unknown_email_get_the_same_401(http, srv):
    acct = await register(http, srv.base)
    wrong = assert_unauthorized(await login(http, srv.base, acct.email, "not the password"))
    unknown = assert_unauthorized(await login(http, srv.base, unique_email("nobody")))
    assert wrong["message"] == unknown["message"]
    assert BAD_LOGIN in wrong["message"].lower()
    assert wrong.get("details") == unknown.get("details")
    # the account is not harmed by the failed attempt
    assert (await login(http, srv.base, acct.email)).status == 200


async def test_an_unknown_email_takes_about_as_long_as_a_wrong_password(http, start_server):
    # The default profile, so that the hash dominates the time of a login.
    srv = await start_server(auth="jwt", password_hash_profile="default")
    acct = await register(http, srv.base)
    wrong: list[float] = []
    unknown: list[float] = []
    for _ in range(3):
        for email, times in ((acct.email, wrong), (unique_email("ghost"), unknown)):
            t0 = time.perf_counter()
            assert_unauthorized(await login(http, srv.base, email, "not the password"))
            times.append(time.perf_counter() - t0)
    # without a stand-in hash an unknown email answers in a small fraction of the time
    assert sorted(unknown)[1] > 0.4 * sorted(wrong)[1], (unknown, wrong)


async def test_the_default_profile_is_rfc_9106_low_memory(http, start_server, database_url):
    srv = await start_server(auth="jwt", password_hash_profile="default")
    acct = await register(http, srv.base)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(acct.user_id))
    finally:
        await conn.close()
    params = argon2.extract_parameters(stored)
    low = argon2.profiles.RFC_9106_LOW_MEMORY
    assert params.type is argon2.Type.ID
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        low.time_cost,
        low.memory_cost,
        low.parallelism,
    )
    assert (params.hash_len, params.salt_len) == (low.hash_len, low.salt_len)


@pytest.mark.parametrize(
    "body",
    [
        {"email": "someone@example.test"},
        {"password": PASSWORD},
        {"email": "someone@example.test", "password": PASSWORD, "remember": True},
        {"email": "someone@example.test", "password": PASSWORD, "session": "jwt"},
        {"email": ["someone@example.test"], "password": PASSWORD},
    ],
)
async def test_login_refuses_bad_bodies_with_400(http, srv, body):
    assert_error(await call(http, "POST", f"{srv.base}{AUTH}/login", json=body), 400, "bad_request")


async def test_an_account_without_a_password_cannot_log_in(http, srv):
    # The development user exists in every database and has no password.
    for password in (PASSWORD, "", "x" * 8):
        r = await login(http, srv.base, "dev@boardcast.local", password)
        if password == "":
            assert r.status in (400, 401), r.body
            continue
        err = assert_unauthorized(r)
        assert BAD_LOGIN in err["message"].lower()


async def test_users_me_needs_credentials(http, srv):
    r = await call(http, "GET", f"{srv.base}{ME}")
    assert_unauthorized(r)
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


# ------------------------------------------------------------------ refresh


async def test_refresh_rotates_the_refresh_token(http, srv):
    acct = await register(http, srv.base)
    r = await refresh(http, srv.base, acct.refresh_token)
    assert r.status == 200, r.body
    assert_token_body(r.body, acct.email)
    assert r.body["refresh_token"] != acct.refresh_token
    assert claims_of(r.body["access_token"])["sid"] == claims_of(acct.access_token)["sid"]
    assert (await me(http, srv.base, r.body["access_token"])).status == 200
    # the new one rotates again
    again = await refresh(http, srv.base, r.body["refresh_token"])
    assert again.status == 200, again.body
    assert again.body["refresh_token"] not in (acct.refresh_token, r.body["refresh_token"])


async def test_reusing_a_spent_refresh_token_revokes_the_whole_session(http, srv):
    acct = await register(http, srv.base)
    other = await signed_in(http, srv.base, acct.email)  # a second session of the same user
    first = await refresh(http, srv.base, acct.refresh_token)
    assert first.status == 200
    second = await refresh(http, srv.base, first.body["refresh_token"])
    assert second.status == 200
    newest = second.body

    reused = await refresh(http, srv.base, acct.refresh_token)
    err = assert_unauthorized(reused)
    assert err.get("details", {}).get("reason") == "refresh_token_reused", err

    # every refresh token of the family is dead, the newest included
    assert_unauthorized(await refresh(http, srv.base, newest["refresh_token"]))
    # and so are the session's access tokens, at once on this node
    for token in (acct.access_token, first.body["access_token"], newest["access_token"]):
        assert_unauthorized(await me(http, srv.base, token))
    # the user's other session is untouched
    assert (await me(http, srv.base, other["access_token"])).status == 200
    assert (await refresh(http, srv.base, other["refresh_token"])).status == 200


async def test_a_refresh_token_expires_after_its_ttl(http, start_server):
    srv = await start_server(auth="jwt", refresh_token_ttl_s=1)
    acct = await register(http, srv.base)
    fresh = await signed_in(http, srv.base, acct.email)
    assert (await refresh(http, srv.base, fresh["refresh_token"])).status == 200
    # a wall-clock expiry: nothing to wait on but the clock
    await asyncio.sleep(1.5)
    r = await refresh(http, srv.base, acct.refresh_token)
    assert r.status == 401, r.body
    assert_error(r, 401, r.body["error"]["code"])


async def test_concurrent_refreshes_with_one_token_succeed_at_most_once(http, srv):
    acct = await register(http, srv.base)
    replies = await asyncio.gather(*(refresh(http, srv.base, acct.refresh_token) for _ in range(6)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [401] * 5, [r.body for r in replies]
    for r in replies:
        if r.status == 401:
            assert_unauthorized(r)


@pytest.mark.parametrize("token", ["bcr_", "bcr_nonsense", "not-a-token"])
async def test_unknown_refresh_tokens_are_refused(http, srv, token):
    assert_unauthorized(await refresh(http, srv.base, token))


async def test_an_access_token_is_not_a_refresh_token_and_vice_versa(http, srv):
    acct = await register(http, srv.base)
    assert_unauthorized(await refresh(http, srv.base, acct.access_token))
    assert_unauthorized(await me(http, srv.base, acct.refresh_token))
    assert (await refresh(http, srv.base, acct.refresh_token)).status == 200


# ------------------------------------------------------------------ logout


async def test_logout_with_the_refresh_token_revokes_the_session(http, srv):
    acct = await register(http, srv.base)
    other = await signed_in(http, srv.base, acct.email)
    assert (await me(http, srv.base, acct.access_token)).status == 200  # verified once before
    r = await call(http, "POST", f"{srv.base}{AUTH}/logout", json={"refresh_token": acct.refresh_token})
    assert r.status == 204, r.body
    assert r.body is None
    assert_unauthorized(await refresh(http, srv.base, acct.refresh_token))
    assert_unauthorized(await me(http, srv.base, acct.access_token))
    # only that session
    assert (await me(http, srv.base, other["access_token"])).status == 200


async def test_logout_with_only_the_access_token_revokes_its_session(http, srv):
    # Reading of the contract: "{"refresh_token"?} or none" -- with no body the session is the
    # one of the credentials presented.
    acct = await register(http, srv.base)
    r = await call(http, "POST", f"{srv.base}{AUTH}/logout", headers=acct.headers)
    assert r.status == 204, r.body
    assert_unauthorized(await me(http, srv.base, acct.access_token))
    assert_unauthorized(await refresh(http, srv.base, acct.refresh_token))


async def test_revocation_reaches_another_node_within_session_check_s(http, start_server):
    node_a = await start_server(auth="jwt", session_check_s=1.0)
    node_b = await start_server(auth="jwt", session_check_s=1.0)
    acct = await register(http, node_a.base)
    assert (await me(http, node_b.base, acct.access_token)).status == 200  # node B has checked it
    r = await call(http, "POST", f"{node_a.base}{AUTH}/logout", json={"refresh_token": acct.refresh_token})
    assert r.status == 204
    assert_unauthorized(await me(http, node_a.base, acct.access_token))
    revoked_at = time.monotonic()
    # Node B may trust its last check for up to 1 s; poll it (there is no event to wait on).
    while (await me(http, node_b.base, acct.access_token)).status == 200:
        assert time.monotonic() - revoked_at < 1.0 + 1.0, "node B still accepts a revoked token"
        await asyncio.sleep(0.05)
    assert_unauthorized(await me(http, node_b.base, acct.access_token))


async def test_api_token_revocation_reaches_another_node_within_session_check_s(http, start_server):
    node_a = await start_server(auth="jwt", session_check_s=1.0)
    node_b = await start_server(auth="jwt", session_check_s=1.0)
    acct = await register(http, node_a.base)
    created = await new_api_token(http, node_a.base, acct)
    assert (await me(http, node_b.base, created["token"])).status == 200
    r = await call(http, "DELETE", f"{node_a.base}{TOKENS}/{created['id']}", headers=acct.headers)
    assert r.status == 204, r.body
    assert_unauthorized(await me(http, node_a.base, created["token"]))
    revoked_at = time.monotonic()
    while (await me(http, node_b.base, created["token"])).status == 200:
        assert time.monotonic() - revoked_at < 1.0 + 1.0, "node B still accepts a revoked API token"
        await asyncio.sleep(0.05)
    assert_unauthorized(await me(http, node_b.base, created["token"]))


# ------------------------------------------------------------------ password change


async def change_password(
    http: aiohttp.ClientSession, base: str, token: str, current: str, new: str
) -> Reply:
    return await call(
        http,
        "POST",
        f"{base}{ME}/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(token),
    )


async def test_change_password_needs_the_current_one(http, srv):
    acct = await register(http, srv.base)
    assert_unauthorized(
        await change_password(http, srv.base, acct.access_token, "wrong password", "new password 1")
    )
    # nothing changed
    assert (await login(http, srv.base, acct.email)).status == 200
    assert_unauthorized(await login(http, srv.base, acct.email, "new password 1"))


async def test_change_password_refuses_a_too_short_new_one(http, srv):
    acct = await register(http, srv.base)
    assert_error(
        await change_password(http, srv.base, acct.access_token, PASSWORD, "short"), 400, "bad_request"
    )
    assert (await login(http, srv.base, acct.email)).status == 200


async def test_change_password_revokes_every_other_session(http, srv):
    acct = await register(http, srv.base)
    other = await signed_in(http, srv.base, acct.email)
    new = "a brand new passphrase"
    r = await change_password(http, srv.base, acct.access_token, PASSWORD, new)
    assert r.status == 204, r.body

    assert_unauthorized(await login(http, srv.base, acct.email, PASSWORD))
    assert (await login(http, srv.base, acct.email, new)).status == 200
    # the other session is gone, refresh and access token alike
    assert_unauthorized(await refresh(http, srv.base, other["refresh_token"]))
    assert_unauthorized(await me(http, srv.base, other["access_token"]))
    # the session that changed it goes on
    assert (await me(http, srv.base, acct.access_token)).status == 200
    assert (await refresh(http, srv.base, acct.refresh_token)).status == 200


# ------------------------------------------------------------------ missing and bad tokens


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", BOARDS, None),
        ("POST", BOARDS, {"title": "x"}),
        ("GET", ME, None),
        ("GET", TOKENS, None),
        ("POST", TOKENS, {"name": "x"}),
        ("POST", f"{ME}/password", {"current_password": PASSWORD, "new_password": "another password"}),
    ],
)
async def test_missing_credentials_get_401_with_www_authenticate(http, srv, method, path, body):
    r = await call(http, method, f"{srv.base}{path}", json=body)
    assert_unauthorized(r)
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), dict(r.headers)


async def test_a_board_cannot_be_created_without_credentials(http, srv):
    acct = await register(http, srv.base)
    assert_unauthorized(await call(http, "POST", f"{srv.base}{BOARDS}", json={"title": "anon"}))
    listed = await call(http, "GET", f"{srv.base}{BOARDS}", headers=acct.headers)
    assert listed.status == 200 and listed.body["boards"] == []


FORGERIES = [
    "payload_byte_flipped",
    "payload_other_user",
    "signature_byte_flipped",
    "signature_removed",
    "other_secret",
    "wrong_audience",
    "wrong_issuer",
    "alg_none",
    "alg_none_keeping_signature",
    "alg_NONE_uppercase",
    "hs512_same_secret",
    "rs256_header_hmac_signature",
    "rs256_signed",
    "no_exp_claim",
    "unknown_session",
    "expired_and_other_secret",
    "two_segments",
    "garbage_segments",
]


def forge(kind: str, token: str, secret: str, other_user_id: str) -> str:
    claims = claims_of(token)
    head, payload, sig = token.split(".")
    now = int(time.time())
    match kind:
        case "payload_byte_flipped":
            return f"{head}.{flip_char(payload, len(payload) // 2)}.{sig}"
        case "payload_other_user":
            return f"{head}.{_segment({**claims, 'sub': other_user_id})}.{sig}"
        case "signature_byte_flipped":
            return f"{head}.{payload}.{flip_char(sig, 0)}"
        case "signature_removed":
            return f"{head}.{payload}."
        case "other_secret":
            return sign_hs(claims, "another-secret-" + "x" * 50)
        case "wrong_audience":
            return sign_hs({**claims, "aud": "someone-else"}, secret)
        case "wrong_issuer":
            return sign_hs({**claims, "iss": "https://evil.example"}, secret)
        case "alg_none":
            return unsigned(claims)
        case "alg_none_keeping_signature":
            return unsigned(claims, signature=sig)
        case "alg_NONE_uppercase":
            return unsigned(claims, alg="NONE")
        case "hs512_same_secret":
            return sign_hs(claims, secret, alg="HS512")
        case "rs256_header_hmac_signature":
            return sign_hs(claims, secret, header_alg="RS256")
        case "rs256_signed":
            return sign_rs256(claims)
        case "no_exp_claim":
            return sign_hs({k: v for k, v in claims.items() if k != "exp"}, secret)
        case "unknown_session":
            return sign_hs({**claims, "sid": str(uuid.uuid4())}, secret)
        case "expired_and_other_secret":
            return sign_hs({**claims, "iat": now - 7200, "exp": now - 3600}, "another-secret-" + "x" * 50)
        case "two_segments":
            return f"{head}.{payload}"
        case "garbage_segments":
            return "abc.def.ghi"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", FORGERIES)
async def test_bad_tokens_are_refused_with_401_unauthorized(http, srv, kind):
    acct = await register(http, srv.base)
    victim = await register(http, srv.base)
    # the genuine token is verified first, so the server has it among its verified tokens
    assert (await me(http, srv.base, acct.access_token)).status == 200
    forged = forge(kind, acct.access_token, secret_of(srv), victim.user_id)
    assert forged != acct.access_token
    assert_unauthorized(await me(http, srv.base, forged))
    assert_unauthorized(
        await call(http, "POST", f"{srv.base}{BOARDS}", json={"title": "x"}, headers=bearer(forged))
    )
    # the genuine token still works: only the forgery was refused
    assert (await me(http, srv.base, acct.access_token)).status == 200


async def test_an_expired_access_token_gets_token_expired(http, srv):
    acct = await register(http, srv.base)
    now = int(time.time())
    expired = sign_hs({**claims_of(acct.access_token), "iat": now - 7200, "exp": now - 3600}, secret_of(srv))
    err = assert_unauthorized(await me(http, srv.base, expired), "token_expired")
    assert err["message"]
    assert_unauthorized(
        await call(http, "POST", f"{srv.base}{BOARDS}", json={"title": "x"}, headers=bearer(expired)),
        "token_expired",
    )


async def test_an_access_token_expires_after_its_ttl(http, start_server):
    srv = await start_server(auth="jwt", access_token_ttl_s=1)
    acct = await register(http, srv.base)
    exp = claims_of(acct.access_token)["exp"]
    assert (await me(http, srv.base, acct.access_token)).status == 200
    # the expiry is a wall-clock instant: nothing to wait on but the clock
    await asyncio.sleep(max(0.0, exp - time.time()) + 1.1)
    assert_unauthorized(await me(http, srv.base, acct.access_token), "token_expired")
    # refreshing gives a working one again
    r = await refresh(http, srv.base, acct.refresh_token)
    assert r.status == 200, r.body
    assert r.body["expires_in"] == 1
    assert (await me(http, srv.base, r.body["access_token"])).status == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Token {token}",
        "{token}",
        "Bearer {token} extra",
        "Bearer {token}x",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer bcp_",
        "Bearer bcp_0123456789abcdef0123456789abcdef",
        "Bearer bcp_" + "x" * 4000,  # refused unread: no long strings in the token cache
        "Bearer {refresh}",
    ],
)
async def test_garbage_authorization_headers_get_401(http, srv, header):
    acct = await register(http, srv.base)
    value = header.format(token=acct.access_token, refresh=acct.refresh_token)
    r = await call(http, "GET", f"{srv.base}{ME}", headers={"Authorization": value})
    assert_unauthorized(r)


# ------------------------------------------------------------------ cookie sessions


async def cookie_login(browser: aiohttp.ClientSession, base: str, email: str) -> Reply:
    r = await login(browser, base, email, session="cookie")
    assert r.status == 200, r.body
    return r


def csrf_of(browser: aiohttp.ClientSession, base: str) -> str:
    value = jar_value(browser, f"{base}/", "boardcast_csrf")
    assert value, "no boardcast_csrf cookie"
    return value


def assert_session_cookies(reply: Reply, secure: bool = False) -> dict[str, Morsel[str]]:
    cookies = set_cookies(reply)
    assert {"boardcast_access", "boardcast_refresh", "boardcast_csrf"} <= set(cookies), list(cookies)
    access, refresh_, csrf = (cookies[n] for n in ("boardcast_access", "boardcast_refresh", "boardcast_csrf"))
    assert access["httponly"] and access["samesite"].lower() == "lax" and access["path"] == "/"
    assert refresh_["httponly"] and refresh_["samesite"].lower() == "strict"
    assert refresh_["path"] == "/api/v1/auth"
    assert not csrf["httponly"] and csrf["samesite"].lower() == "strict" and csrf["path"] == "/"
    for morsel in (access, refresh_, csrf):
        assert bool(morsel["secure"]) is secure, morsel.OutputString()
        assert morsel.value
    return cookies


async def test_cookie_login_sets_the_three_cookies_as_documented(http, srv):
    acct = await register(http, srv.base)
    r = await login(http, srv.base, acct.email, session="cookie")
    assert r.status == 200, r.body
    assert set(r.body) == {"user", "csrf_token", "expires_in"}, r.body
    assert r.body["user"]["id"] == acct.user_id and r.body["expires_in"] == 900
    cookies = assert_session_cookies(r)
    assert cookies["boardcast_csrf"].value == r.body["csrf_token"]
    assert cookies["boardcast_refresh"].value.startswith("bcr_")
    assert claims_of(cookies["boardcast_access"].value)["sub"] == acct.user_id


async def test_cookie_register_sets_the_cookies_too(http, srv):
    email = unique_email("ck")
    r = await call(
        http,
        "POST",
        f"{srv.base}{AUTH}/register",
        json={"email": email, "password": PASSWORD, "name": "Cookie", "session": "cookie"},
    )
    assert r.status == 201, r.body
    assert set(r.body) == {"user", "csrf_token", "expires_in"}, r.body
    assert_session_cookies(r)


async def test_cookies_are_secure_in_production(http, start_server):
    srv = await start_server(auth="jwt", env="production", secret="p" * 64, password_hash_profile="default")
    acct = await register(http, srv.base)
    r = await login(http, srv.base, acct.email, session="cookie")
    assert r.status == 200, r.body
    assert_session_cookies(r, secure=True)


async def test_cookie_reads_need_no_csrf_but_writes_do(browser, srv):
    acct = await register(browser, srv.base)
    await cookie_login(browser, srv.base, acct.email)
    got = await call(browser, "GET", f"{srv.base}{ME}")
    assert got.status == 200 and got.body["id"] == acct.user_id

    url = f"{srv.base}{BOARDS}"
    err = assert_error(await call(browser, "POST", url, json={"title": "no csrf"}), 403, "forbidden")
    assert err.get("details", {}).get("reason") == "csrf", err
    wrong = await call(browser, "POST", url, json={"title": "bad csrf"}, headers={"X-CSRF-Token": "x" * 43})
    assert assert_error(wrong, 403, "forbidden").get("details", {}).get("reason") == "csrf"
    # nothing was created by the refused requests
    assert (await call(browser, "GET", url)).body["boards"] == []

    csrf = {"X-CSRF-Token": csrf_of(browser, srv.base)}
    made = await call(browser, "POST", url, json={"title": "with csrf"}, headers=csrf)
    assert made.status == 201, made.body
    board_url = f"{url}/{made.body['id']}"
    for method, kw in (("PATCH", {"json": {"title": "renamed"}}), ("DELETE", {})):
        refused = await call(browser, method, board_url, **kw)
        assert assert_error(refused, 403, "forbidden").get("details", {}).get("reason") == "csrf"
    assert (await call(browser, "PATCH", board_url, json={"title": "renamed"}, headers=csrf)).status == 200
    assert (await call(browser, "DELETE", board_url, headers=csrf)).status == 204


async def test_cookie_password_change_needs_csrf(browser, srv):
    acct = await register(browser, srv.base)
    await cookie_login(browser, srv.base, acct.email)
    url = f"{srv.base}{ME}/password"
    body = {"current_password": PASSWORD, "new_password": "changed by a forged form"}
    err = assert_error(await call(browser, "POST", url, json=body), 403, "forbidden")
    assert err.get("details", {}).get("reason") == "csrf"
    assert (await login(browser, srv.base, acct.email)).status == 200  # unchanged
    r = await call(browser, "POST", url, json=body, headers={"X-CSRF-Token": csrf_of(browser, srv.base)})
    assert r.status == 204, r.body
    assert (await login(browser, srv.base, acct.email, body["new_password"])).status == 200


async def test_a_bearer_header_wins_over_the_cookie_and_needs_no_csrf(http, browser, srv):
    cookie_user = await register(http, srv.base)
    bearer_user = await register(http, srv.base)
    await cookie_login(browser, srv.base, cookie_user.email)

    got = await call(browser, "GET", f"{srv.base}{ME}", headers=bearer_user.headers)
    assert got.status == 200 and got.body["id"] == bearer_user.user_id
    made = await call(
        browser, "POST", f"{srv.base}{BOARDS}", json={"title": "bearer"}, headers=bearer_user.headers
    )
    assert made.status == 201, made.body
    listed = await call(http, "GET", f"{srv.base}{BOARDS}", headers=bearer_user.headers)
    assert [b["id"] for b in listed.body["boards"]] == [made.body["id"]]
    # a bad Bearer header is refused even though a good cookie is there
    assert_unauthorized(await call(browser, "GET", f"{srv.base}{ME}", headers=bearer("not-a-token")))


async def test_cookie_refresh_rotates_and_needs_csrf(browser, srv):
    acct = await register(browser, srv.base)
    first = await cookie_login(browser, srv.base, acct.email)
    old_refresh = set_cookies(first)["boardcast_refresh"].value
    old_access = set_cookies(first)["boardcast_access"].value
    url = f"{srv.base}{AUTH}/refresh"

    err = assert_error(await call(browser, "POST", url, json={}), 403, "forbidden")
    assert err.get("details", {}).get("reason") == "csrf"

    r = await call(browser, "POST", url, json={}, headers={"X-CSRF-Token": csrf_of(browser, srv.base)})
    assert r.status == 200, r.body
    # Reading of the contract: a cookie session refreshed by cookie stays a cookie session;
    # the refresh token never shows in a body that scripts can read.
    assert "refresh_token" not in r.body
    rotated = set_cookies(r)
    assert rotated["boardcast_refresh"].value != old_refresh
    # (the access token may be byte-identical when minted within the same second)
    assert claims_of(rotated["boardcast_access"].value)["sid"] == claims_of(old_access)["sid"]
    assert jar_value(browser, url, "boardcast_refresh") == rotated["boardcast_refresh"].value
    got = await call(browser, "GET", f"{srv.base}{ME}")
    assert got.status == 200 and got.body["id"] == acct.user_id

    # the spent refresh cookie, presented again: theft, the session is revoked
    csrf = csrf_of(browser, srv.base)
    async with aiohttp.ClientSession() as thief:
        reused = await call(
            thief,
            "POST",
            url,
            json={},
            headers={
                "Cookie": f"boardcast_refresh={old_refresh}; boardcast_csrf={csrf}",
                "X-CSRF-Token": csrf,
            },
        )
    assert assert_unauthorized(reused).get("details", {}).get("reason") == "refresh_token_reused"
    assert_unauthorized(await call(browser, "GET", f"{srv.base}{ME}"))


async def test_cookie_logout_needs_csrf_clears_the_cookies_and_revokes(browser, srv):
    acct = await register(browser, srv.base)
    r = await cookie_login(browser, srv.base, acct.email)
    access = set_cookies(r)["boardcast_access"].value
    refresh_value = set_cookies(r)["boardcast_refresh"].value
    url = f"{srv.base}{AUTH}/logout"

    err = assert_error(await call(browser, "POST", url), 403, "forbidden")
    assert err.get("details", {}).get("reason") == "csrf"
    assert (await call(browser, "GET", f"{srv.base}{ME}")).status == 200  # still signed in

    out = await call(browser, "POST", url, headers={"X-CSRF-Token": csrf_of(browser, srv.base)})
    assert out.status == 204, out.body
    assert jar_value(browser, f"{srv.base}/", "boardcast_access") is None
    assert jar_value(browser, f"{srv.base}{AUTH}/refresh", "boardcast_refresh") is None
    assert jar_value(browser, f"{srv.base}/", "boardcast_csrf") is None

    async with aiohttp.ClientSession() as replay:
        stale = await call(replay, "GET", f"{srv.base}{ME}", headers={"Cookie": f"boardcast_access={access}"})
        assert_unauthorized(stale)
        stale_refresh = await call(
            replay, "POST", f"{srv.base}{AUTH}/refresh", json={"refresh_token": refresh_value}
        )
        assert_unauthorized(stale_refresh)


# ------------------------------------------------------------------ login CSRF

# A page on another site can make the visitor's browser POST a form to Boardcast. With
# enctype="text/plain" the body is `name=value`, so a name of `{"email": ..., "password": "pa`
# and a value of `ss"}` post JSON. Answered with cookies, that would sign the visitor's
# browser in to the attacker's account (what they then type lands with the attacker). A page
# cannot send Content-Type: application/json without a CORS preflight, which Boardcast never
# grants, so a request for a cookie session must carry it. Token answers are useless to a
# forging page (it cannot read them): those need no Content-Type, as in the README's curl tour.

FORM_PASSWORD = "chosen=by the attacker"  # a text/plain form needs an "=" somewhere


def text_plain_form(fields: dict[str, str]) -> bytes:
    """The body a browser posts for a <form enctype="text/plain"> built to carry ``fields`` as
    JSON: one input whose name is the JSON up to the first "=" and whose value is the rest."""
    document = json.dumps(fields)
    name, eq, value = document.partition("=")
    assert eq, "the JSON needs an '=' for the form to split it at"
    return f"{name}={value}\r\n".encode()


async def post_raw(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    content_type: str | None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A POST with exactly this body and Content-Type (None: no Content-Type header at all)."""
    headers = dict(headers or {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    skip = ("Content-Type",) if content_type is None else ()
    async with http.post(url, data=body, headers=headers, skip_auto_headers=skip) as r:
        assert r.request_info.headers.get("Content-Type") == content_type
        raw = await r.read()
        return Reply(r.status, r.headers, json.loads(raw) if raw else None)


def assert_refused_media_type(reply: Reply) -> None:
    err = assert_error(reply, 415, "bad_request")
    assert err.get("details") == {"reason": "content_type"}, err
    assert "application/json" in err["message"], err
    assert not set_cookies(reply), reply.headers.getall("Set-Cookie", [])


async def test_a_cross_site_form_cannot_sign_a_browser_in(http, browser, srv):
    attacker = await register(http, srv.base, password=FORM_PASSWORD)
    url = f"{srv.base}{AUTH}/login"
    forged = text_plain_form({"email": attacker.email, "password": FORM_PASSWORD, "session": "cookie"})
    assert_refused_media_type(await post_raw(browser, url, forged, "text/plain"))
    assert jar_value(browser, f"{srv.base}/", "boardcast_access") is None
    assert_unauthorized(await call(browser, "GET", f"{srv.base}{ME}"))

    # every other way a page can post without a preflight: refused too
    as_json = json.dumps({"email": attacker.email, "password": FORM_PASSWORD, "session": "cookie"}).encode()
    for content_type in (
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        assert_refused_media_type(await post_raw(browser, url, as_json, content_type))
    assert jar_value(browser, f"{srv.base}/", "boardcast_access") is None

    # the same request as JSON is what a sign-in page of Boardcast's own sends: it works
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        r = await post_raw(browser, url, as_json, content_type)
        assert r.status == 200, (content_type, r.body)
        assert_session_cookies(r)
    got = await call(browser, "GET", f"{srv.base}{ME}")
    assert got.status == 200 and got.body["id"] == attacker.user_id


async def test_a_cross_site_form_cannot_register_a_cookie_session(http, browser, srv):
    email = unique_email("forged")
    body = {"email": email, "password": FORM_PASSWORD, "name": "Mallory", "session": "cookie"}
    r = await post_raw(browser, f"{srv.base}{AUTH}/register", text_plain_form(body), "text/plain")
    assert_refused_media_type(r)
    assert jar_value(browser, f"{srv.base}/", "boardcast_access") is None
    # refused before anything was done: no account was created
    r = await login(http, srv.base, email, FORM_PASSWORD)
    assert assert_unauthorized(r)["message"] == BAD_LOGIN


async def test_a_cookie_session_from_a_refresh_token_in_the_body_needs_json(http, browser, srv):
    # Today no form can post this body (no field of it may hold the "=" a text/plain form
    # needs), but a refresh token in the body can be the attacker's own, just like a password:
    # the same rule as for login keeps it that way whatever fields come next.
    attacker = await register(http, srv.base)
    url = f"{srv.base}{AUTH}/refresh"
    forged = json.dumps({"refresh_token": attacker.refresh_token, "session": "cookie"}).encode()
    assert_refused_media_type(await post_raw(browser, url, forged, "text/plain"))
    assert jar_value(browser, f"{srv.base}/", "boardcast_access") is None
    # refused before the token was spent
    r = await refresh(http, srv.base, attacker.refresh_token)
    assert r.status == 200, r.body


async def test_token_sessions_need_no_content_type(http, srv):
    # the README's tour: `curl -d '{...}'` sends application/x-www-form-urlencoded
    for content_type in ("application/x-www-form-urlencoded", None, "text/plain"):
        email = unique_email("curl")
        body = json.dumps({"email": email, "password": PASSWORD, "name": "Curl"}).encode()
        r = await post_raw(http, f"{srv.base}{AUTH}/register", body, content_type)
        assert r.status == 201, (content_type, r.body)
        assert not set_cookies(r)
        login_body = json.dumps({"email": email, "password": PASSWORD, "session": "token"}).encode()
        r = await post_raw(http, f"{srv.base}{AUTH}/login", login_body, content_type)
        assert r.status == 200, (content_type, r.body)
        assert_token_body(r.body, email)
        refresh_body = json.dumps({"refresh_token": r.body["refresh_token"]}).encode()
        r = await post_raw(http, f"{srv.base}{AUTH}/refresh", refresh_body, content_type)
        assert r.status == 200, (content_type, r.body)
        assert not set_cookies(r)


async def test_refresh_by_cookie_needs_the_csrf_header_not_a_content_type(browser, srv):
    # the refresh token is the browser's own cookie, nothing an attacker can plant; the
    # X-CSRF-Token header is what keeps other sites out (it needs a preflight too)
    acct = await register(browser, srv.base)
    await cookie_login(browser, srv.base, acct.email)
    url = f"{srv.base}{AUTH}/refresh"
    err = assert_error(await post_raw(browser, url, b"", None), 403, "forbidden")
    assert err.get("details", {}).get("reason") == "csrf"
    r = await post_raw(browser, url, b"", None, headers={"X-CSRF-Token": csrf_of(browser, srv.base)})
    assert r.status == 200, r.body
    assert_session_cookies(r)


# ------------------------------------------------------------------ personal API tokens


async def test_api_token_is_shown_once_and_listed_without_it(http, srv):
    acct = await register(http, srv.base)
    created = await new_api_token(http, srv.base, acct, name="deploy bot")
    assert set(created) == {"id", "name", "token", "created_at", "expires_at"}, created
    assert created["token"].startswith("bcp_") and len(created["token"]) > 20
    assert created["name"] == "deploy bot"
    assert created["expires_at"] is None
    assert abs((as_datetime(created["created_at"]) - dt.datetime.now(dt.UTC)).total_seconds()) < 60

    listed = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert listed.status == 200, listed.body
    assert set(listed.body) == {"tokens"}
    (entry,) = listed.body["tokens"]
    assert set(entry) == {"id", "name", "created_at", "expires_at", "last_used_at"}, entry
    assert entry["id"] == created["id"] and entry["name"] == "deploy bot"
    assert entry["last_used_at"] is None
    assert created["token"] not in json.dumps(listed.body)
    assert created["token"][4:] not in json.dumps(listed.body)


async def test_api_token_with_an_expiry(http, srv):
    acct = await register(http, srv.base)
    created = await new_api_token(http, srv.base, acct, expires_in_days=30)
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert abs((as_datetime(created["expires_at"]) - expected).total_seconds()) < 3600


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "expires_in_days": 0},
        {"name": "x", "expires_in_days": 3651},
        {},
        {"name": "x", "scope": "all"},
    ],
)
async def test_api_token_create_refuses_bad_bodies(http, srv, body):
    acct = await register(http, srv.base)
    assert_error(
        await call(http, "POST", f"{srv.base}{TOKENS}", json=body, headers=acct.headers), 400, "bad_request"
    )
    listed = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert listed.body["tokens"] == []


async def test_api_token_works_as_bearer_for_rest(http, srv):
    acct = await register(http, srv.base)
    token = (await new_api_token(http, srv.base, acct))["token"]
    got = await me(http, srv.base, token)
    assert got.status == 200 and got.body["id"] == acct.user_id
    made = await call(http, "POST", f"{srv.base}{BOARDS}", json={"title": "by token"}, headers=bearer(token))
    assert made.status == 201, made.body
    listed = await call(http, "GET", f"{srv.base}{BOARDS}", headers=acct.headers)
    assert made.body["id"] in [b["id"] for b in listed.body["boards"]]
    tokens = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert tokens.body["tokens"][0]["last_used_at"] is not None


async def test_api_token_is_revoked_at_once(http, srv):
    acct = await register(http, srv.base)
    created = await new_api_token(http, srv.base, acct)
    assert (await me(http, srv.base, created["token"])).status == 200
    r = await call(http, "DELETE", f"{srv.base}{TOKENS}/{created['id']}", headers=acct.headers)
    assert r.status == 204, r.body
    assert_unauthorized(await me(http, srv.base, created["token"]))
    listed = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert created["id"] not in [t["id"] for t in listed.body["tokens"]]


async def test_another_user_cannot_revoke_my_api_token(http, srv):
    owner = await register(http, srv.base)
    other = await register(http, srv.base)
    created = await new_api_token(http, srv.base, owner)
    r = await call(http, "DELETE", f"{srv.base}{TOKENS}/{created['id']}", headers=other.headers)
    assert r.status in (403, 404), r.body
    assert (await me(http, srv.base, created["token"])).status == 200


async def test_an_expired_api_token_is_refused(http, srv, database_url):
    acct = await register(http, srv.base)
    created = await new_api_token(http, srv.base, acct, expires_in_days=1)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE id = $1",
            uuid.UUID(created["id"]),
        )
    finally:
        await conn.close()
    # the contract's general rule: "An expired one: 401 token_expired"
    assert_unauthorized(await me(http, srv.base, created["token"]), "token_expired")


async def test_an_api_token_cannot_manage_tokens_or_change_the_password(http, srv):
    acct = await register(http, srv.base)
    created = await new_api_token(http, srv.base, acct)
    token = created["token"]
    r = await call(http, "POST", f"{srv.base}{TOKENS}", json={"name": "child"}, headers=bearer(token))
    assert_error(r, 403, "forbidden")
    r = await call(http, "DELETE", f"{srv.base}{TOKENS}/{created['id']}", headers=bearer(token))
    assert_error(r, 403, "forbidden")
    assert_error(
        await change_password(http, srv.base, token, PASSWORD, "stolen new password"), 403, "forbidden"
    )
    # none of it happened
    assert (await login(http, srv.base, acct.email)).status == 200
    listed = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert [t["id"] for t in listed.body["tokens"]] == [created["id"]]
    assert (await me(http, srv.base, token)).status == 200


async def test_the_database_keeps_only_token_hashes(http, srv, database_url):
    acct = await register(http, srv.base)
    created = await new_api_token(http, srv.base, acct)
    token = created["token"]
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT token_hash FROM api_tokens WHERE id = $1", uuid.UUID(created["id"]))
        api_rows = [r["t"] for r in await conn.fetch("SELECT t::text AS t FROM api_tokens t")]
        refresh_rows = [r["t"] for r in await conn.fetch("SELECT t::text AS t FROM refresh_tokens t")]
    finally:
        await conn.close()
    assert row is not None
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    for secret, rows in ((token, api_rows), (acct.refresh_token, refresh_rows)):
        assert rows
        for form in (secret, secret[4:], secret.encode().hex()):
            assert not any(form in text for text in rows), f"{secret[:4]} token stored in plain"


async def test_the_api_token_cap_holds_under_concurrent_creates(http, srv):
    acct = await register(http, srv.base)
    for i in range(45):
        await new_api_token(http, srv.base, acct, name=f"t{i}")

    async def attempt(i: int) -> Reply:
        return await call(
            http, "POST", f"{srv.base}{TOKENS}", json={"name": f"race{i}"}, headers=acct.headers
        )

    replies = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sum(r.status == 201 for r in replies) == 5, [r.status for r in replies]
    listed = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert len(listed.body["tokens"]) == 50


async def test_at_most_50_live_api_tokens(http, srv):
    acct = await register(http, srv.base)
    made = [await new_api_token(http, srv.base, acct, name=f"t{i}") for i in range(50)]
    r = await call(http, "POST", f"{srv.base}{TOKENS}", json={"name": "one too many"}, headers=acct.headers)
    assert 400 <= r.status < 500 and r.status != 401, r.body
    assert_error(r, r.status, r.body["error"]["code"])
    listed = await call(http, "GET", f"{srv.base}{TOKENS}", headers=acct.headers)
    assert len(listed.body["tokens"]) == 50
    # revoking one makes room
    assert (
        await call(http, "DELETE", f"{srv.base}{TOKENS}/{made[0]['id']}", headers=acct.headers)
    ).status == 204
    await new_api_token(http, srv.base, acct, name="room again")
