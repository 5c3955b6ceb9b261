"""Auth modes (docs/ACCESS.md, Modes): production refuses the development shortcuts (no auth,
the public default secret, a short secret, the fast password hashing profile) in settings and
in the real command; development mode makes every caller the development user; and the secret
never shows in logs or in the settings' repr."""

from __future__ import annotations

import asyncio
import signal
import uuid

import aiohttp
import pytest

from server.config import DEFAULT_SECRET, MIN_SECRET_LENGTH, ConfigError, Settings, load_settings
from tests.conftest import free_port
from tests.identity import register
from tests.test_auth import AUTH, ME, TOKENS, bearer, claims_of, sign_hs
from tests.test_config_cli import boardcast_cmd, clean_env, run
from tests.test_rest import call
from tests.wsclient import WsClient

DEV_USER_ID = "00000000-0000-4000-8000-000000000001"
GOOD_SECRET = "k3y-" + "0123456789abcdef" * 4  # 68 characters
URLS = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/app",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
PRODUCTION = {"BOARDCAST_ENV": "production", "BOARDCAST_SECRET": GOOD_SECRET, **URLS}


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ)
    return str(exc.value)


# ------------------------------------------------------------------ settings


def test_jwt_is_the_default_mode():
    assert Settings().auth == "jwt"
    assert load_settings({}).auth == "jwt"
    assert load_settings(PRODUCTION).auth == "jwt"


def test_production_with_a_good_secret_starts():
    s = load_settings(PRODUCTION)
    assert s.production and s.secret == GOOD_SECRET and s.password_hash_profile == "default"


def test_production_refuses_auth_none():
    msg = refused({**PRODUCTION, "BOARDCAST_AUTH": "none"})
    assert "BOARDCAST_AUTH" in msg and "production" in msg


@pytest.mark.parametrize(
    ("case", "secret"),
    [
        ("unset", None),
        ("the default, set explicitly", DEFAULT_SECRET),
        ("too short", "s" * (MIN_SECRET_LENGTH - 1)),
    ],
)
def test_production_refuses_a_missing_default_or_short_secret(case, secret):
    env = {k: v for k, v in PRODUCTION.items() if k != "BOARDCAST_SECRET"}
    if secret is not None:
        env["BOARDCAST_SECRET"] = secret
    msg = refused(env)
    assert "BOARDCAST_SECRET" in msg, msg
    if secret is not None:
        assert secret not in msg  # the refusal does not print the secret


def test_production_accepts_a_secret_of_the_minimum_length():
    assert load_settings({**PRODUCTION, "BOARDCAST_SECRET": "m" * MIN_SECRET_LENGTH}).production


def test_production_refuses_the_fast_password_hash_profile():
    msg = refused({**PRODUCTION, "BOARDCAST_PASSWORD_HASH_PROFILE": "fast"})
    assert "BOARDCAST_PASSWORD_HASH_PROFILE" in msg and "production" in msg


def test_development_allows_the_shortcuts():
    s = load_settings({"BOARDCAST_AUTH": "none", "BOARDCAST_PASSWORD_HASH_PROFILE": "fast"})
    assert s.auth == "none" and s.secret == DEFAULT_SECRET and s.password_hash_profile == "fast"


def test_the_secret_is_not_in_the_settings_repr():
    s = load_settings({**PRODUCTION})
    for text in (repr(s), str(s), repr(Settings(secret=GOOD_SECRET)), repr(load_settings({}))):
        assert GOOD_SECRET not in text and DEFAULT_SECRET not in text, text


# ------------------------------------------------------------------ the command refuses


@pytest.mark.parametrize(
    ("extra", "var"),
    [
        ({"BOARDCAST_AUTH": "none"}, "BOARDCAST_AUTH"),
        ({"BOARDCAST_SECRET": ""}, "BOARDCAST_SECRET"),
        ({"BOARDCAST_SECRET": DEFAULT_SECRET}, "BOARDCAST_SECRET"),
        ({"BOARDCAST_SECRET": "short-secret-42"}, "BOARDCAST_SECRET"),
        ({"BOARDCAST_PASSWORD_HASH_PROFILE": "fast"}, "BOARDCAST_PASSWORD_HASH_PROFILE"),
    ],
)
def test_serve_in_production_refuses_development_shortcuts(tmp_path, database_url, redis_url, extra, var):
    env = clean_env(
        BOARDCAST_ENV="production",
        BOARDCAST_SECRET=GOOD_SECRET,
        BOARDCAST_DATA_DIR=str(tmp_path / "data"),
        BOARDCAST_PORT=str(free_port()),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
    )
    env.update(extra)
    done = run(["serve"], env, tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "configuration error" in done.stderr and var in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    secret = env["BOARDCAST_SECRET"]
    if secret:
        assert secret not in done.stdout + done.stderr
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------ development mode


async def test_auth_none_makes_every_caller_the_development_user(http, server):
    got = await call(http, "GET", f"{server.base}{ME}")
    assert got.status == 200, got.body
    assert got.body["id"] == DEV_USER_ID
    made = await call(http, "POST", f"{server.base}/api/v1/boards", json={"title": "dev"})
    assert made.status == 201 and made.body["role"] == "owner", made.body
    client = await WsClient.connect(http, server.ws_url, "json")
    try:
        assert client.welcome["user_id"] == DEV_USER_ID
        assert (await client.join(made.body["id"]))["type"] == "joined"
    finally:
        await client.close()


# ------------------------------------------------------------------ the secret stays out of logs


async def wait_up(proc: asyncio.subprocess.Process, base: str, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(60):
        while True:
            assert proc.returncode is None, f"serve exited early with {proc.returncode}"
            try:
                async with http.get(f"{base}/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            # a starting process gives no event to wait on; poll its port gently
            await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_the_secret_never_appears_in_the_logs(
    http, tmp_path, database_url, redis_url, redis_prefix, log_format
):
    secret = f"log-canary-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        BOARDCAST_SECRET=secret,
        BOARDCAST_PORT=str(port),
        BOARDCAST_LOG_LEVEL="debug",
        BOARDCAST_LOG_FORMAT=log_format,
        BOARDCAST_PASSWORD_HASH_PROFILE="fast",
        BOARDCAST_REDIS_PREFIX=f"{redis_prefix}-logs-{uuid.uuid4().hex[:6]}",
        BOARDCAST_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *boardcast_cmd(), "serve", env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    try:
        await wait_up(proc, base, http)
        # exercise the code that handles secrets and tokens, successes and failures alike
        acct = await register(http, base)
        assert (await call(http, "GET", f"{base}{ME}", headers=acct.headers)).status == 200
        bad = await call(
            http, "POST", f"{base}{AUTH}/login", json={"email": acct.email, "password": "wrong pw!"}
        )
        assert bad.status == 401
        forged = sign_hs(claims_of(acct.access_token), "wrong-" + secret)
        assert (await call(http, "GET", f"{base}{ME}", headers=bearer(forged))).status == 401
        made = await call(http, "POST", f"{base}{TOKENS}", json={"name": "t"}, headers=acct.headers)
        assert made.status == 201
        client = await WsClient.connect(
            http, f"{base.replace('http', 'ws', 1)}/ws?access_token={made.body['token']}"
        )
        await client.close()
        r = await call(http, "POST", f"{base}{AUTH}/refresh", json={"refresh_token": acct.refresh_token})
        assert r.status == 200
        issued = [acct.access_token, acct.refresh_token, made.body["token"], r.body["refresh_token"]]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await proc.wait()
    output = log_path.read_text(errors="replace")
    assert output.strip(), "the server logged nothing: the check would prove nothing"
    assert secret not in output
    assert secret[: len(secret) // 2] not in output
    # nor do the credentials it hands out (a log reader must not be able to sign in)
    for token in issued:
        assert token not in output, token[:8]
    assert "Traceback" not in output, output[-3000:]
