"""External identity providers (docs/ACCESS.md, "External identity providers (OIDC)").

Verifier level: :class:`server.oidc.OidcVerifier` against a real provider on 127.0.0.1
(tests/oidc_provider.py) serving real RS256 and ES256 keys over HTTP. Server level: real
servers configured with that provider, provider tokens on REST and on /ws.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from structlog.testing import capture_logs

from actors.metrics import Metrics
from protocol.errors import BoardcastError, ErrorCode
from server.oidc import MAX_JWKS_BYTES, ExternalIdentity, OidcVerifier
from tests.conftest import RunningServer, ServerFactory
from tests.identity import register, unique_email, ws_url_with_token
from tests.oidc_provider import OidcProvider, make_key
from tests.test_rest import Reply, assert_error, call
from tests.wsclient import WsClient

VerifierFactory = Callable[..., OidcVerifier]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims_for(provider: OidcProvider, sub: str = "user-1", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": provider.issuer,
        "aud": provider.audience,
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        **extra,
    }


def hs256_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """Signed by hand: PyJWT rightly refuses to use a PEM public key as an HMAC secret."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    async with OidcProvider() as p:
        yield p


@pytest.fixture
async def make_verifier(
    provider: OidcProvider, http: aiohttp.ClientSession
) -> AsyncIterator[VerifierFactory]:
    made: list[OidcVerifier] = []

    def make(**overrides: Any) -> OidcVerifier:
        kwargs: dict[str, Any] = {
            "issuer": provider.issuer,
            "audience": provider.audience,
            "jwks_url": provider.jwks_url,
            "session": http,
            "cache_s": 3600.0,
            **overrides,
        }
        verifier = OidcVerifier(**kwargs)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.close()


@pytest.fixture
def verifier(make_verifier: VerifierFactory) -> OidcVerifier:
    return make_verifier()


async def refused(verifier: OidcVerifier, token: str, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> str | None:
    """Assert the token is refused with ``code``; return details.reason."""
    with pytest.raises(BoardcastError) as info:
        await verifier.verify(token)
    assert info.value.code == code, (info.value.code, info.value.details)
    if code == ErrorCode.UNAUTHORIZED:
        assert info.value.message == "invalid token"
    reason = (info.value.details or {}).get("reason")
    return str(reason) if reason is not None else None


# --- valid tokens ---------------------------------------------------------------------------


async def test_rs256_token_gives_the_identity(provider: OidcProvider, verifier: OidcVerifier) -> None:
    token = provider.issue(
        "auth0|abc123",
        extra_claims={"name": "Ann Example", "email": "ann@example.test", "email_verified": True},
    )
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    identity = await verifier.verify(token)
    assert identity == ExternalIdentity(
        issuer=provider.issuer,
        subject="auth0|abc123",
        email="ann@example.test",
        name="Ann Example",
        expires_at=float(exp),
    )


async def test_es256_token_gives_the_identity(provider: OidcProvider, verifier: OidcVerifier) -> None:
    token = provider.issue("user_2", alg="ES256", extra_claims={"preferred_username": "bob"})
    assert jwt.get_unverified_header(token)["kid"] == provider.ec_kid
    identity = await verifier.verify(token)
    assert (identity.subject, identity.email, identity.name) == ("user_2", None, "bob")
    assert identity.issuer == provider.issuer
    assert identity.expires_at > time.time() + 200


async def test_name_falls_back_to_preferred_username_then_email(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    both = provider.issue(
        "s1",
        extra_claims={"preferred_username": "carol", "email": "carol@example.test", "email_verified": True},
    )
    assert (await verifier.verify(both)).name == "carol"
    email_only = provider.issue("s2", extra_claims={"email": "dan@example.test", "email_verified": True})
    identity = await verifier.verify(email_only)
    assert (identity.name, identity.email) == ("dan@example.test", "dan@example.test")
    nothing = provider.issue("s3", extra_claims={"name": "   ", "preferred_username": 42})
    assert (await verifier.verify(nothing)).name is None
    long_name = provider.issue("s4", extra_claims={"name": "x" * 500})
    assert (await verifier.verify(long_name)).name == "x" * 200


# What a provider may send as email_verified. Only true (some providers, older AWS Cognito
# among them, send booleans as strings) says the address was confirmed; anything else, the
# claim missing included, leaves the address out.
VERIFIED_FLAGS = (True, "true", "TRUE", " True ")
UNVERIFIED_FLAGS = (None, False, "false", "False", 1, 0, "1", "yes", "", "truthy", [True], {"v": True})


@pytest.mark.parametrize("flag", VERIFIED_FLAGS)
async def test_a_verified_email_is_used(provider: OidcProvider, verifier: OidcVerifier, flag: object) -> None:
    token = provider.issue("s1", extra_claims={"email": "ann@example.test", "email_verified": flag})
    identity = await verifier.verify(token)
    assert (identity.email, identity.name) == ("ann@example.test", "ann@example.test")


@pytest.mark.parametrize("flag", UNVERIFIED_FLAGS)
async def test_an_email_not_verified_as_true_is_not_used(
    provider: OidcProvider, verifier: OidcVerifier, flag: object
) -> None:
    # flag None: the claim is left out of the token
    token = provider.issue(
        "s1", extra_claims={"email": "eve@example.test", "email_verified": flag, "name": "Eve"}
    )
    identity = await verifier.verify(token)
    assert (identity.email, identity.name) == (None, "Eve")
    no_name = provider.issue("s2", extra_claims={"email": "eve@example.test", "email_verified": flag})
    identity = await verifier.verify(no_name)
    assert (identity.email, identity.name) == (None, None)  # an unverified address is not shown either


async def test_a_verified_claim_does_not_make_a_bad_address_good(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    for email in ("not-an-address", "two@at@example.test", "a@", 42, "x" * 250 + "@b.io"):
        token = provider.issue("s3", extra_claims={"email": email, "email_verified": True})
        assert (await verifier.verify(token)).email is None, email


async def test_audience_may_be_a_list_containing_ours(provider: OidcProvider, verifier: OidcVerifier) -> None:
    token = provider.issue("s1", aud=["https://api.other.test", provider.audience])
    assert (await verifier.verify(token)).subject == "s1"


async def test_a_keycloak_shaped_issuer_with_a_path(http: aiohttp.ClientSession) -> None:
    async with OidcProvider(issuer_path="/realms/test") as provider:
        verifier = OidcVerifier(
            issuer=provider.issuer,
            audience=provider.audience,
            jwks_url=provider.jwks_url,
            session=http,
            cache_s=60,
        )
        try:
            assert provider.issuer.endswith("/realms/test")
            assert (await verifier.verify(provider.issue("kc-user"))).issuer == provider.issuer
            # the issuer must match exactly: the bare host is someone else
            assert await refused(verifier, provider.issue("kc-user", iss=provider.base)) == "issuer"
        finally:
            await verifier.close()


# --- claims ---------------------------------------------------------------------------------


async def test_wrong_issuer_is_refused(provider: OidcProvider, verifier: OidcVerifier) -> None:
    assert await refused(verifier, provider.issue("s1", iss="https://evil.example.test")) == "issuer"
    assert await refused(verifier, provider.issue("s1", iss=provider.issuer + "/")) == "issuer"
    assert await refused(verifier, provider.issue("s1", extra_claims={"iss": None})) == "missing_claim"


async def test_wrong_audience_is_refused(provider: OidcProvider, verifier: OidcVerifier) -> None:
    assert await refused(verifier, provider.issue("s1", aud="another-app")) == "audience"
    assert await refused(verifier, provider.issue("s1", aud=["another-app", "third-app"])) == "audience"
    assert await refused(verifier, provider.issue("s1", extra_claims={"aud": None})) == "missing_claim"


async def test_expired_token_is_token_expired(
    provider: OidcProvider, verifier: OidcVerifier, http: aiohttp.ClientSession
) -> None:
    await refused(verifier, provider.issue("s1", exp_in=-120), ErrorCode.TOKEN_EXPIRED)
    with pytest.raises(BoardcastError) as info:
        await verifier.verify(provider.issue("s1", exp_in=-120))
    assert info.value.message == "token expired"
    # within the 30 s leeway a token still counts: clocks drift
    assert (await verifier.verify(provider.issue("s1", exp_in=-10))).subject == "s1"
    tight = OidcVerifier(
        issuer=provider.issuer,
        audience=provider.audience,
        jwks_url=provider.jwks_url,
        session=http,
        cache_s=60,
        leeway_s=0,
    )
    try:
        await refused(tight, provider.issue("s1", exp_in=-10), ErrorCode.TOKEN_EXPIRED)
    finally:
        await tight.close()


async def test_expired_token_for_someone_else_is_unauthorized(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    """token_expired tells a client to refresh; that is only true of an otherwise good token."""
    assert await refused(verifier, provider.issue("s1", exp_in=-120, aud="another-app")) == "audience"
    assert await refused(verifier, provider.issue("s1", exp_in=-120, iss="https://evil.test")) == "issuer"
    # and a forgery under a published kid is a bad signature, not an expired token
    stranger = make_key("RS256")
    forged = jwt.encode(
        claims_for(provider, exp=int(time.time()) - 120),
        stranger.private_key,
        algorithm="RS256",
        headers={"kid": provider.rsa_kid},
    )
    assert await refused(verifier, forged) == "signature"


async def test_token_not_yet_valid_is_refused(provider: OidcProvider, verifier: OidcVerifier) -> None:
    future = int(time.time()) + 600
    assert await refused(verifier, provider.issue("s1", extra_claims={"nbf": future})) == "not_yet_valid"
    assert await refused(verifier, provider.issue("s1", extra_claims={"iat": future})) == "not_yet_valid"
    # nbf within the leeway is fine
    soon = int(time.time()) + 10
    assert (await verifier.verify(provider.issue("s1", extra_claims={"nbf": soon}))).subject == "s1"


async def test_exp_and_sub_are_required(provider: OidcProvider, verifier: OidcVerifier) -> None:
    assert await refused(verifier, provider.issue("s1", exp_in=None)) == "missing_claim"
    assert await refused(verifier, provider.issue("s1", extra_claims={"sub": None})) == "missing_claim"
    assert await refused(verifier, provider.issue("")) == "subject"
    assert await refused(verifier, provider.issue("x" * 256)) == "subject"
    assert (await verifier.verify(provider.issue("x" * 255))).subject == "x" * 255
    assert await refused(verifier, provider.issue("s1", extra_claims={"sub": 12345})) == "subject"
    far = str(int(time.time()) + 300)
    assert (
        await refused(verifier, provider.issue("s1", exp_in=None, extra_claims={"exp": far})) == "malformed"
    )


# --- algorithms and keys --------------------------------------------------------------------


async def test_alg_none_is_refused(provider: OidcProvider, verifier: OidcVerifier) -> None:
    claims = claims_for(provider)
    for alg in ("none", "None", "NONE", ""):
        for header in ({"alg": alg}, {"alg": alg, "typ": "JWT", "kid": provider.rsa_kid}):
            token = f"{segment(header)}.{segment(claims)}."
            assert await refused(verifier, token) == "algorithm"
    no_alg = f"{segment({'typ': 'JWT', 'kid': provider.rsa_kid})}.{segment(claims)}."
    assert await refused(verifier, no_alg) == "algorithm"
    assert provider.fetches == 0  # refused before any key is looked up


async def test_hs256_signed_with_the_providers_public_key_is_refused(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    """The classic key confusion: an attacker HMACs with the (public) RSA key as the secret."""
    claims = claims_for(provider, sub="admin")
    pem = provider.public_pem(provider.rsa_kid)
    jwk_json = json.dumps(provider.key(provider.rsa_kid).jwk()).encode()
    for secret in (pem, pem.strip(), jwk_json):
        for header in ({"alg": "HS256", "typ": "JWT", "kid": provider.rsa_kid}, {"alg": "HS256"}):
            assert await refused(verifier, hs256_token(header, claims, secret)) == "algorithm"
    # HMAC with a long random secret, or an HS512/HS384 one, is just as unwelcome
    assert await refused(verifier, jwt.encode(claims, "s" * 64, algorithm="HS512")) == "algorithm"
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        short = jwt.encode(claims, "short", algorithm="HS256")
    assert await refused(verifier, short) == "algorithm"
    assert provider.fetches == 0


async def test_other_asymmetric_algorithms_are_refused(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    rsa_key = provider.key(provider.rsa_kid).private_key
    claims = claims_for(provider)
    for alg in ("RS512", "RS384", "PS256"):
        token = jwt.encode(claims, rsa_key, algorithm=alg, headers={"kid": provider.rsa_kid})
        assert await refused(verifier, token) == "algorithm"
    assert provider.fetches == 0


async def test_key_must_fit_the_algorithm(
    provider: OidcProvider, verifier: OidcVerifier, http: aiohttp.ClientSession
) -> None:
    # an ES256 signature presented under the RSA key's kid, and the other way round
    es_as_rsa = provider.issue("s1", alg="ES256", headers={"kid": provider.rsa_kid})
    assert await refused(verifier, es_as_rsa) == "unknown_key"
    rs_as_ec = provider.issue("s1", alg="RS256", headers={"kid": provider.ec_kid})
    assert await refused(verifier, rs_as_ec) == "unknown_key"
    # a published key marked for encryption, or for another algorithm, is not used to verify
    enc = provider.new_key("RS256")
    provider.extra_jwks.append({**enc.jwk(), "use": "enc"})
    other_alg = provider.new_key("RS256")
    provider.extra_jwks.append({**other_alg.jwk(), "alg": "RS512"})
    verifier2 = OidcVerifier(
        issuer=provider.issuer,
        audience=provider.audience,
        jwks_url=provider.jwks_url,
        session=http,
        cache_s=60,
    )
    try:
        assert await refused(verifier2, provider.issue("s1", kid=enc.kid)) == "unknown_key"
        assert await refused(verifier2, provider.issue("s1", kid=other_alg.kid)) == "unknown_key"
        assert verifier2.health()["keys"] == 2  # only the two good keys were taken
    finally:
        await verifier2.close()


async def test_hmac_key_in_the_jwks_is_never_used(provider: OidcProvider, verifier: OidcVerifier) -> None:
    secret = b"published-by-mistake-" * 3
    provider.extra_jwks.append({"kty": "oct", "kid": "shared", "k": b64url(secret), "alg": "HS256"})
    token = hs256_token({"alg": "HS256", "kid": "shared"}, claims_for(provider), secret)
    assert await refused(verifier, token) == "algorithm"
    # and it does not count as a usable key
    assert (await verifier.verify(provider.issue("s1"))).subject == "s1"
    assert verifier.health()["keys"] == 2


async def test_missing_kid(provider: OidcProvider, verifier: OidcVerifier) -> None:
    # two keys published: a token without kid cannot say which
    assert await refused(verifier, provider.issue("s1", headers={"kid": None})) == "missing_kid"


async def test_missing_kid_with_a_single_published_key(
    provider: OidcProvider, make_verifier: VerifierFactory
) -> None:
    provider.retire(provider.ec_kid)
    verifier = make_verifier()
    assert (await verifier.verify(provider.issue("s1", headers={"kid": None}))).subject == "s1"
    # but the one key still has to fit the algorithm
    token = provider.issue("s1", alg="ES256", headers={"kid": None})
    assert await refused(verifier, token) == "missing_kid"


async def test_tampered_payload_is_refused(provider: OidcProvider, verifier: OidcVerifier) -> None:
    for alg in ("RS256", "ES256"):
        token = provider.issue("alice", alg=alg, extra_claims={"name": "Alice"})
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = "mallory"
        assert await refused(verifier, f"{header}.{segment(claims)}.{signature}") == "signature"
        flipped = signature[:-6] + ("AAAAAA" if not signature.endswith("AAAAAA") else "BBBBBB")
        assert await refused(verifier, f"{header}.{payload}.{flipped}") in ("signature", "malformed")
        assert await refused(verifier, f"{header}.{payload}.") in ("signature", "malformed")
        assert (await verifier.verify(token)).subject == "alice"  # the original is still fine


async def test_garbage_is_refused_without_asking_the_provider(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    garbage = [
        "",
        "garbage",
        "bcp_0123456789abcdef",
        "a.b.c",
        "..",
        "....",
        "!!!.@@@.###",
        f"{b64url(b'not json')}.{segment({'sub': 'x'})}.",
        f"{segment(['RS256'])}.{segment({'sub': 'x'})}.",
        f"{segment({'alg': 'RS256', 'kid': 7})}.{segment({'sub': 'x'})}.",
        f"{segment({'alg': ['RS256']})}.{segment({'sub': 'x'})}.",
        "x" * 20_000,
        f"{segment({'alg': 'RS256', 'kid': 'k', 'pad': 'p' * 20_000})}.e30.",
    ]
    for token in garbage:
        assert await refused(verifier, token) in ("malformed", "algorithm"), token[:40]
    assert provider.fetches == 0
    # a good header over a payload that is not a JSON object: the signature fails first
    header = segment({"alg": "RS256", "kid": provider.rsa_kid})
    for payload in (b64url(b"not json"), segment([1, 2]), "e30"):
        assert await refused(verifier, f"{header}.{payload}.{b64url(b'x' * 256)}") in (
            "signature",
            "malformed",
        )


def test_claims_issuer_routes_tokens(provider: OidcProvider) -> None:
    assert OidcVerifier.claims_issuer(provider.issue("s1")) == provider.issuer
    assert (
        OidcVerifier.claims_issuer(provider.issue("s1", alg="ES256", iss="https://x.test/"))
        == "https://x.test/"
    )
    local = jwt.encode({"iss": "boardcast", "sub": "u"}, "k" * 40, algorithm="HS256")
    assert OidcVerifier.claims_issuer(local) == "boardcast"
    none_alg = f"{segment({'alg': 'none'})}.{segment({'iss': 'https://x.test/'})}."
    assert OidcVerifier.claims_issuer(none_alg) == "https://x.test/"  # routing only: verify() refuses it
    for token in (
        "",
        "bcp_abcdef",
        "a.b.c",
        "x" * 20_000,
        f"{segment({'alg': 'RS256'})}.{segment({'iss': 5})}.",
    ):
        assert OidcVerifier.claims_issuer(token) is None
    assert OidcVerifier.claims_issuer(f"{segment({'alg': 'RS256'})}.{segment({'sub': 'x'})}.") is None


# --- the key set: caching, refetching, rotation, failures -------------------------------------


async def test_keys_are_cached(provider: OidcProvider, verifier: OidcVerifier) -> None:
    tokens = [provider.issue(f"s{i}", alg=("RS256", "ES256")[i % 2]) for i in range(40)]
    for token in tokens[:20]:
        await verifier.verify(token)
    identities = await asyncio.gather(*(verifier.verify(t) for t in tokens[20:]))
    assert [i.subject for i in identities] == [f"s{i}" for i in range(20, 40)]
    assert provider.fetches == 1
    health = verifier.health()
    assert health["ok"] is True and health["keys"] == 2 and health["last_error"] is None
    assert isinstance(health["age_s"], float) and 0 <= health["age_s"] < 60


async def test_concurrent_first_fetches_coalesce(provider: OidcProvider, verifier: OidcVerifier) -> None:
    provider.hold()
    tasks = [asyncio.create_task(verifier.verify(provider.issue(f"s{i}"))) for i in range(25)]
    await asyncio.wait_for(provider.fetched.wait(), 5)
    provider.release()
    identities = await asyncio.gather(*tasks)
    assert len(identities) == 25
    assert provider.fetches == 1


async def test_cache_expiry_fetches_again(provider: OidcProvider, make_verifier: VerifierFactory) -> None:
    verifier = make_verifier(cache_s=1e-6)  # every verification finds the keys stale
    await verifier.verify(provider.issue("s1"))
    await verifier.verify(provider.issue("s2"))
    assert provider.fetches == 2
    # a key the provider retired stops working once the keys are fetched again
    provider.retire(provider.rsa_kid)
    assert await refused(verifier, provider.issue("s3", kid=provider.rsa_kid)) == "unknown_key"
    assert (await verifier.verify(provider.issue("s4", alg="ES256"))).subject == "s4"


async def test_unknown_kid_refetches_once_per_interval(
    provider: OidcProvider, verifier: OidcVerifier
) -> None:
    assert (await verifier.verify(provider.issue("s1"))).subject == "s1"
    assert provider.fetches == 1
    stranger = provider.new_key("RS256", publish=False)
    token = provider.issue("s1", kid=stranger.kid)
    with capture_logs() as logs:
        assert await refused(verifier, token) == "unknown_key"
    assert provider.fetches == 2  # the kid was unknown: the provider may have rotated
    assert token not in repr(logs)
    # another made-up kid within the interval does not make the provider answer again
    other = provider.new_key("ES256", publish=False)
    assert await refused(verifier, provider.issue("s1", kid=other.kid)) == "unknown_key"
    assert await refused(verifier, provider.issue("s1", headers={"kid": "made-up"})) == "unknown_key"
    assert provider.fetches == 2
    # many at once: still nothing
    await asyncio.gather(
        *(refused(verifier, provider.issue("s1", headers={"kid": f"k{i}"})) for i in range(20))
    )
    assert provider.fetches == 2
    assert (await verifier.verify(provider.issue("s1", alg="ES256"))).subject == "s1"
    assert provider.fetches == 2


async def test_rotated_key_is_picked_up(provider: OidcProvider, verifier: OidcVerifier) -> None:
    assert (await verifier.verify(provider.issue("s1"))).subject == "s1"
    new_kid = provider.rotate("ES256")
    provider.retire(provider.ec_kid)
    assert (await verifier.verify(provider.issue("s2", kid=new_kid))).subject == "s2"
    assert provider.fetches == 2
    # the old RSA key is still published and still works, without another fetch
    assert (await verifier.verify(provider.issue("s3", kid=provider.rsa_kid))).subject == "s3"
    # a second rotation within the interval waits for the next allowed fetch (or cache expiry)
    newer_kid = provider.rotate("RS256")
    assert await refused(verifier, provider.issue("s4", kid=newer_kid)) == "unknown_key"
    assert provider.fetches == 2


async def test_rotations_after_the_interval(provider: OidcProvider, make_verifier: VerifierFactory) -> None:
    verifier = make_verifier(refetch_interval_s=0)
    await verifier.verify(provider.issue("s1"))
    for n, alg in enumerate(("RS256", "ES256", "RS256"), start=2):
        kid = provider.rotate(alg)
        assert (await verifier.verify(provider.issue("s1", kid=kid))).subject == "s1"
        assert provider.fetches == n


async def test_provider_failing_after_the_first_fetch(
    provider: OidcProvider, make_verifier: VerifierFactory
) -> None:
    metrics = Metrics()
    verifier = make_verifier(cache_s=1e-6, metrics=metrics, refetch_interval_s=0)

    def fetches(outcome: str) -> float:
        value = metrics.registry.get_sample_value("boardcast_oidc_jwks_fetches_total", {"outcome": outcome})
        return value or 0.0

    await verifier.verify(provider.issue("s1"))
    assert (fetches("ok"), fetches("error")) == (1, 0)
    provider.fail_with = 500
    with capture_logs() as logs:
        assert (await verifier.verify(provider.issue("s2"))).subject == "s2"  # the cached keys
    assert provider.fetches == 2
    assert (fetches("ok"), fetches("error")) == (1, 1)
    health = verifier.health()
    assert health["ok"] is False and health["keys"] == 2
    assert "500" in str(health["last_error"])
    assert any(e["event"] == "oidc_jwks_fetch_failed" and e["log_level"] == "warning" for e in logs)

    await provider.stop()  # gone entirely: connection refused
    assert (await verifier.verify(provider.issue("s3", alg="ES256"))).subject == "s3"
    assert verifier.health()["ok"] is False
    assert "500" not in str(verifier.health()["last_error"])  # the newer error
    assert fetches("error") == 2

    provider.fail_with = None
    await provider.start()  # back on the same port
    assert (await verifier.verify(provider.issue("s4"))).subject == "s4"
    assert verifier.health()["ok"] is True and verifier.health()["last_error"] is None
    assert fetches("ok") == 2


async def test_failed_refetches_are_throttled(provider: OidcProvider, make_verifier: VerifierFactory) -> None:
    """With the provider down, stale keys are served without waiting on it every request."""
    verifier = make_verifier(cache_s=1e-6)
    await verifier.verify(provider.issue("s1"))
    provider.fail_with = 503
    for i in range(10):
        assert (await verifier.verify(provider.issue(f"s{i}"))).subject == f"s{i}"
    assert provider.fetches == 2  # one failed attempt, then the retry waits


async def test_provider_down_from_the_start(provider: OidcProvider, make_verifier: VerifierFactory) -> None:
    provider.fail_with = 500
    verifier = make_verifier()
    token = provider.issue("s1")
    assert await refused(verifier, token, ErrorCode.UNAVAILABLE) == "jwks_unavailable"
    health = verifier.health()
    assert (health["ok"], health["keys"], health["age_s"]) == (False, 0, None)
    # and the failure is not retried on every request
    await refused(verifier, token, ErrorCode.UNAVAILABLE)
    assert provider.fetches == 1


async def test_unusable_jwks_answers(provider: OidcProvider, make_verifier: VerifierFactory) -> None:
    provider.extra_jwks.append({"kty": "oct", "k": "x" * (MAX_JWKS_BYTES + 10)})
    too_big = make_verifier()
    await refused(too_big, provider.issue("s1"), ErrorCode.UNAVAILABLE)
    assert "larger than" in str(too_big.health()["last_error"])

    provider.extra_jwks.clear()
    provider.retire(provider.rsa_kid)
    provider.retire(provider.ec_kid)
    provider.extra_jwks.append({"kty": "oct", "k": b64url(b"k" * 32)})
    no_usable = make_verifier()
    await refused(no_usable, provider.issue("s1"), ErrorCode.UNAVAILABLE)
    assert "no usable" in str(no_usable.health()["last_error"])


async def test_health_before_any_fetch(verifier: OidcVerifier, provider: OidcProvider) -> None:
    assert verifier.health() == {"ok": True, "keys": 0, "age_s": None, "last_error": None}
    assert provider.fetches == 0
    await verifier.close()
    await verifier.close()  # idempotent


# --- server level -----------------------------------------------------------------------------


def new_subject() -> str:
    # the database outlives test runs, and a provider's port (its issuer) may come round again
    return f"oidc|{uuid.uuid4().hex}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def oidc_server(start_server: ServerFactory, provider: OidcProvider) -> RunningServer:
    return await start_server(
        auth="jwt",
        oidc_issuer=provider.issuer,
        oidc_audience=provider.audience,
        oidc_jwks_url=provider.jwks_url,
    )


@pytest.fixture
async def srv(start_server: ServerFactory, provider: OidcProvider) -> RunningServer:
    return await oidc_server(start_server, provider)


async def me(http: aiohttp.ClientSession, srv: RunningServer, token: str) -> Reply:
    return await call(http, "GET", f"{srv.base}/api/v1/users/me", headers=bearer(token))


async def test_provider_token_signs_in_as_a_local_user(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    sub, email = new_subject(), unique_email("oidc")
    token = provider.issue(sub, extra_claims={"name": "Olive Idc", "email": email, "email_verified": True})
    reply = await me(http, srv, token)
    assert reply.status == 200, reply.body
    assert set(reply.body) == {"id", "email", "name"}
    assert (reply.body["name"], reply.body["email"]) == ("Olive Idc", email)
    user_id = str(uuid.UUID(reply.body["id"]))

    # the same subject next time, with another key and another name in the token: same user
    again = await me(http, srv, provider.issue(sub, alg="ES256", extra_claims={"name": "Renamed"}))
    assert again.status == 200 and again.body["id"] == user_id

    other = await me(http, srv, provider.issue(new_subject(), extra_claims={"preferred_username": "otto"}))
    assert other.status == 200, other.body
    assert other.body["id"] != user_id
    assert (other.body["name"], other.body["email"]) == ("otto", None)


async def test_same_subject_is_the_same_user_on_another_server(
    http: aiohttp.ClientSession, start_server: ServerFactory, provider: OidcProvider
) -> None:
    first, second = await oidc_server(start_server, provider), await oidc_server(start_server, provider)
    sub = new_subject()
    a = await me(http, first, provider.issue(sub, extra_claims={"name": "Nodes"}))
    b = await me(http, second, provider.issue(sub, alg="ES256"))
    assert a.status == b.status == 200, (a.body, b.body)
    assert a.body == b.body
    assert provider.fetches == 2  # one per server


async def test_unverified_or_taken_email_is_not_attached(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    email = unique_email("claimed")
    for flag in (False, None):  # None: no email_verified claim at all
        unverified = provider.issue(new_subject(), extra_claims={"email": email, "email_verified": flag})
        reply = await me(http, srv, unverified)
        assert reply.status == 200, reply.body
        assert reply.body["email"] is None
    # the address was not taken by either: a verified owner of it gets it
    owner = provider.issue(new_subject(), extra_claims={"email": email, "email_verified": "true"})
    reply = await me(http, srv, owner)
    assert reply.status == 200, reply.body
    assert reply.body["email"] == email

    # an address a local account already has is not linked to (or taken by) the external identity
    local = await register(http, srv.base, email=unique_email("local"), name="Local")
    token = provider.issue(
        new_subject(),
        extra_claims={"email": local.email.upper(), "email_verified": True, "name": "Copycat"},
    )
    reply = await me(http, srv, token)
    assert reply.status == 200, reply.body
    assert reply.body["id"] != local.user_id and reply.body["email"] is None


async def test_provider_token_on_boards_and_websocket(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    token = provider.issue(new_subject(), alg="ES256", extra_claims={"name": "Wes Socket"})
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    user = await me(http, srv, token)
    assert user.status == 200, user.body
    board = await call(
        http, "POST", f"{srv.base}/api/v1/boards", json={"title": "OIDC"}, headers=bearer(token)
    )
    assert board.status == 201, board.body
    board_id = board.body["id"]
    column = await call(
        http,
        "POST",
        f"{srv.base}/api/v1/boards/{board_id}/columns",
        json={"title": "Todo"},
        headers=bearer(token),
    )
    assert column.status == 201, column.body

    client = await WsClient.connect(http, ws_url_with_token(srv.ws_url, token), "json")
    try:
        assert str(client.welcome["user_id"]) == user.body["id"]
        assert client.welcome.get("expires_at_ms") == exp * 1000
        joined = await client.join(board_id)
        assert joined["type"] == "joined", joined
        ack = await client.cmd(board_id, {"op": "card.create", "column_id": column.body["id"], "title": "Hi"})
        assert ack["type"] == "ack", ack
        events = await client.wait_seq(board_id, ack["seq"])
        assert str(events[-1]["author"]) == user.body["id"]
    finally:
        await client.close()


async def refused_upgrade(http: aiohttp.ClientSession, url: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        ws = await http.ws_connect(url, protocols=("boardcast.v1.json",))
        await ws.close()
    return info.value.status


async def test_bad_provider_tokens_get_401(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    sub = new_subject()
    claims = claims_for(provider, sub=sub)
    stranger = provider.new_key("RS256", publish=False)
    bad = {
        "wrong audience": provider.issue(sub, aud="another-app"),
        "wrong issuer in an otherwise good token": provider.issue(sub, iss=provider.issuer + "/other"),
        "alg none": f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}.",
        "hs256 with the public key": hs256_token(
            {"alg": "HS256", "kid": provider.rsa_kid}, claims, provider.public_pem(provider.rsa_kid)
        ),
        "unknown key": provider.issue(sub, kid=stranger.kid),
        "not yet valid": provider.issue(sub, extra_claims={"nbf": int(time.time()) + 600}),
    }
    for what, token in bad.items():
        reply = await me(http, srv, token)
        assert_error(reply, 401, "unauthorized")
        assert token not in json.dumps(reply.body), what
        assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, token)) == 401, what

    expired = provider.issue(sub, exp_in=-120)
    assert_error(await me(http, srv, expired), 401, "token_expired")
    assert await refused_upgrade(http, ws_url_with_token(srv.ws_url, expired)) == 401
    assert (await me(http, srv, provider.issue(sub))).status == 200  # the same subject, a good token


async def test_provider_identity_cannot_manage_credentials(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    headers = bearer(provider.issue(new_subject(), extra_claims={"name": "No Tokens"}))
    base = f"{srv.base}/api/v1/users/me"
    assert_error(
        await call(http, "POST", f"{base}/tokens", json={"name": "ci"}, headers=headers), 403, "forbidden"
    )
    assert_error(await call(http, "GET", f"{base}/tokens", headers=headers), 403, "forbidden")
    body = {"current_password": "whatever-it-is", "new_password": "a new password here"}
    assert_error(await call(http, "POST", f"{base}/password", json=body, headers=headers), 403, "forbidden")


async def test_keys_cached_across_requests_and_reported(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    for alg in ("RS256", "ES256", "RS256", "ES256"):
        assert (await me(http, srv, provider.issue(new_subject(), alg=alg))).status == 200
    assert provider.fetches == 1
    health = await call(http, "GET", f"{srv.base}/health")
    assert health.body["oidc"]["ok"] is True and health.body["oidc"]["keys"] == 2
    async with http.get(f"{srv.base}/metrics") as r:
        text = await r.text()
    assert 'boardcast_oidc_jwks_fetches_total{outcome="ok"} 1.0' in text

    # the provider going away does not sign anyone out: its keys are held
    await provider.stop()
    stranger = provider.new_key("ES256", publish=False)
    assert_error(await me(http, srv, provider.issue(new_subject(), kid=stranger.kid)), 401, "unauthorized")
    assert (await me(http, srv, provider.issue(new_subject()))).status == 200
    health = await call(http, "GET", f"{srv.base}/health")
    assert health.body["oidc"]["ok"] is False and health.body["oidc"]["keys"] == 2
    async with http.get(f"{srv.base}/metrics") as r:
        text = await r.text()
    assert 'boardcast_oidc_jwks_fetches_total{outcome="error"} 1.0' in text


async def test_local_tokens_still_work_next_to_a_provider(
    http: aiohttp.ClientSession, srv: RunningServer, provider: OidcProvider
) -> None:
    account = await register(http, srv.base)
    reply = await call(http, "GET", f"{srv.base}/api/v1/users/me", headers=account.headers)
    assert reply.status == 200 and reply.body["id"] == account.user_id
    assert provider.fetches == 0  # a local token is never sent to the provider's verifier
