"""Verifying JWTs from an external OpenID Connect provider (Auth0, Keycloak, Clerk, Supabase...).

One :class:`OidcVerifier` per configured issuer. It keeps the provider's signing keys (its
JWKS) in memory, fetched lazily with the app's HTTP session and refreshed every ``cache_s``;
a token signed with a key it has not seen makes it fetch again, at most once per
``refetch_interval_s``, so a stream of made-up ``kid`` values cannot turn Boardcast into a
load generator against the provider. If the provider cannot be reached the keys already
held keep working, and :meth:`OidcVerifier.health` and the ``jwks_fetches`` metric say so.

Every cryptographic step (JWK parsing, signature checks) is PyJWT's; this module decides which
key and which algorithm PyJWT may use, and never derives either from the token alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt
import msgspec
import structlog
from jwt.exceptions import InvalidSubjectError
from jwt.types import Options

from actors.metrics import Metrics
from protocol.errors import BoardcastError, ErrorCode

log = structlog.get_logger(__name__)

# The only algorithms accepted, and what a JWK must look like to verify each. Checked against
# the token header before anything else: `none`, every HMAC algorithm (whose "secret" could be
# the provider's public key) and everything else is refused outright.
_ALGORITHMS: Final[dict[str, dict[str, str]]] = {
    "RS256": {"kty": "RSA"},
    "ES256": {"kty": "EC", "crv": "P-256"},
}

FETCH_TIMEOUT_S: Final = 5.0
MAX_JWKS_BYTES: Final = 256 * 1024
MAX_TOKEN_BYTES: Final = 16 * 1024
MAX_SUBJECT_CHARS: Final = 255
MAX_NAME_CHARS: Final = 200  # the length docs/ACCESS.md allows a user's name
MAX_EMAIL_CHARS: Final = 254
# after a failed fetch, how long (at most) before the keys are fetched again for any reason
# (first fetch, cache expiry): the provider being down must not make every request wait for a
# timeout. Unknown kids are separately limited to one fetch per refetch_interval_s.
RETRY_AFTER_ERROR_S: Final = 5.0

_DECODE_OPTIONS: Final[Options] = {
    "require": ["exp", "iss", "aud", "sub"],
    "verify_signature": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_iss": True,
    "verify_aud": True,
    "verify_sub": True,
    # a provider's RSA key under 2048 bits is refused instead of warned about
    "enforce_minimum_key_length": True,
}


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who a verified provider token says the caller is."""

    issuer: str
    subject: str
    email: str | None  # None unless present, well formed and email_verified is true
    name: str | None  # name, else preferred_username, else email, else None
    expires_at: float  # the token's exp (unix seconds)


class _JwksError(Exception):
    """The provider's answer could not be used as a key set; the message is safe to report."""


def _invalid(reason: str) -> BoardcastError:
    return BoardcastError(ErrorCode.UNAUTHORIZED, "invalid token", {"reason": reason})


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value else None


def _is_true(value: object) -> bool:
    # some providers (older AWS Cognito among them) send booleans as strings
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _email(claims: dict[str, Any]) -> str | None:
    # Only an address the provider says it confirmed: a missing email_verified proves nothing,
    # and an unconfirmed address could be anyone's. On a local user it would be taken from its
    # real owner (who could then not register) and found by admins adding members by email.
    if not _is_true(claims.get("email_verified")):
        return None
    email = _text(claims.get("email"), MAX_EMAIL_CHARS + 1)
    if email is None or not 3 <= len(email) <= MAX_EMAIL_CHARS or email.count("@") != 1:
        return None
    return email


def _identity(issuer: str, claims: dict[str, Any]) -> ExternalIdentity:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_CHARS:
        raise _invalid("subject")
    exp = claims.get("exp")
    # PyJWT compares int(exp), which a numeric string would also pass
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise _invalid("malformed")
    email = _email(claims)
    name = (
        _text(claims.get("name"), MAX_NAME_CHARS)
        or _text(claims.get("preferred_username"), MAX_NAME_CHARS)
        or (email[:MAX_NAME_CHARS] if email else None)
    )
    return ExternalIdentity(issuer=issuer, subject=subject, email=email, name=name, expires_at=float(exp))


def _usable_alg(jwk: dict[str, Any]) -> str | None:
    """The one algorithm this JWK may verify, or None if it may not verify tokens at all."""
    if jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if "kid" in jwk and not isinstance(jwk["kid"], str):
        return None
    declared = jwk.get("alg")
    for alg, shape in _ALGORITHMS.items():
        if all(jwk.get(field) == value for field, value in shape.items()):
            return alg if declared in (None, alg) else None
    return None


def _parse_jwks(body: bytes) -> dict[tuple[str | None, str], jwt.PyJWK]:
    """Keys by (kid, alg); keys Boardcast may not use (HMAC, other curves, encryption) are left out."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise _JwksError("JWKS is not JSON") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise _JwksError("JWKS has no keys list")
    keys: dict[tuple[str | None, str], jwt.PyJWK] = {}
    skipped = 0
    for jwk in doc["keys"]:
        alg = _usable_alg(jwk) if isinstance(jwk, dict) else None
        if alg is None:
            skipped += 1
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            skipped += 1
            continue
        keys.setdefault((key.key_id, alg), key)
    if skipped:
        log.info("oidc_jwks_keys_skipped", skipped=skipped, usable=len(keys))
    if not keys:
        raise _JwksError("JWKS has no usable RS256 or ES256 signing key")
    return keys


class OidcVerifier:
    """Verifies one provider's JWTs. Safe to share between requests; holds no connection."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        session: aiohttp.ClientSession,
        cache_s: float,
        metrics: Metrics | None = None,
        refetch_interval_s: float = 30.0,
        leeway_s: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self._session = session
        self._cache_s = cache_s
        self._metrics = metrics
        self._refetch_interval_s = refetch_interval_s
        self._leeway_s = leeway_s
        self._retry_after_error_s = min(RETRY_AFTER_ERROR_S, refetch_interval_s)
        self._keys: dict[tuple[str | None, str], jwt.PyJWK] | None = None
        self._fetched_at = -math.inf  # monotonic, last successful fetch
        self._fetched_wall: float | None = None  # unix time of the same, for health()
        self._failed_at = -math.inf  # monotonic, last failed fetch
        self._miss_fetch_at = -math.inf  # monotonic, last fetch caused by an unknown kid
        self._last_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False

    @staticmethod
    def claims_issuer(token: str) -> str | None:
        """The unverified ``iss`` of a JWT-looking token, or None if it is not a JWT.

        Only for routing a Bearer token to the verifier of its issuer: nothing here is trusted.
        """
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            return None
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        iss = claims.get("iss")
        return iss if isinstance(iss, str) else None

    async def verify(self, token: str) -> ExternalIdentity:
        """The identity in a provider token; raises :class:`BoardcastError` if it is not valid.

        ``unauthorized`` with ``details.reason`` for a bad token, ``token_expired`` for an
        expired one, and ``unavailable`` when the provider's keys were never obtained.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise _invalid("malformed") from e
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in _ALGORITHMS:
            raise _invalid("algorithm")
        kid = header.get("kid")  # PyJWT has already refused a kid that is not a string
        key = await self._key_for(kid, alg)
        claims = self._decode(token, key, alg)
        return _identity(self.issuer, claims)

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway_s,
                options=_DECODE_OPTIONS,
            )
        except jwt.ExpiredSignatureError as e:
            # PyJWT checks exp before issuer and audience: only a token that is otherwise
            # good is "expired" (a client answers that by refreshing, which is pointless for
            # a token meant for someone else)
            try:
                jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self._leeway_s,
                    options={**_DECODE_OPTIONS, "verify_exp": False},
                )
            except jwt.PyJWTError as other:
                raise _refusal(other) from other
            raise BoardcastError(ErrorCode.TOKEN_EXPIRED, "token expired") from e
        except jwt.PyJWTError as e:
            raise _refusal(e) from e

    async def _key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        now = time.monotonic()
        stale = now - self._fetched_at >= self._cache_s
        if (self._keys is None or stale) and now - self._failed_at >= self._retry_after_error_s:
            await self._refresh()
        if self._keys is None:
            raise BoardcastError(
                ErrorCode.UNAVAILABLE, "identity provider keys unavailable", {"reason": "jwks_unavailable"}
            )
        key = self._lookup(kid, alg)
        if key is None and kid is not None:
            if self._inflight is not None:  # someone is fetching already: wait for that
                await self._refresh()
                key = self._lookup(kid, alg)
            now = time.monotonic()
            if key is None and now - self._miss_fetch_at >= self._refetch_interval_s:
                # set before awaiting, so concurrent misses join this fetch rather than start more
                self._miss_fetch_at = now
                log.info("oidc_jwks_unknown_kid", kid=kid[:64])
                await self._refresh()
                key = self._lookup(kid, alg)
        if key is None:
            raise _invalid("unknown_key" if kid is not None else "missing_kid")
        return key

    def _lookup(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        keys = self._keys or {}
        if kid is not None:
            return keys.get((kid, alg))
        # a token without kid is only accepted from a provider that publishes one key
        if len(keys) == 1:
            (_, key_alg), key = next(iter(keys.items()))
            return key if key_alg == alg else None
        return None

    async def _refresh(self) -> None:
        """Fetch the JWKS, or wait for the fetch already under way: concurrent callers share one."""
        if self._closed:
            return
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.create_task(self._fetch())
            task.add_done_callback(self._fetch_done)
        # shielded: a caller that gives up (client went away) does not cancel it for the others
        await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        try:
            body = await self._download()
            keys = _parse_jwks(body)
        except (aiohttp.ClientError, TimeoutError, _JwksError) as e:
            error = str(e) if isinstance(e, _JwksError) else f"{type(e).__name__}: {e}"[:300]
            self._failed_at = time.monotonic()
            self._last_error = error
            self._count("error")
            log.warning(
                "oidc_jwks_fetch_failed",
                url=self.jwks_url,
                error=error,
                serving_cached_keys=len(self._keys or ()),
            )
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._fetched_wall = time.time()
        self._last_error = None
        self._count("ok")
        log.info("oidc_jwks_fetched", url=self.jwks_url, keys=len(keys))

    async def _download(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        headers = {"Accept": "application/json"}
        async with self._session.get(self.jwks_url, timeout=timeout, headers=headers) as r:
            if r.status != 200:
                raise _JwksError(f"JWKS answered HTTP {r.status}")
            if r.content_length is not None and r.content_length > MAX_JWKS_BYTES:
                raise _JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
            body = bytearray()
            async for chunk in r.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
            return bytes(body)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.jwks_fetches.labels(outcome=outcome).inc()

    def health(self) -> dict[str, object]:
        """For ``/health``: ``ok`` is false while the last JWKS fetch failed (cached keys, if
        any, are still in use); ``age_s`` is the age of the keys held."""
        age = None if self._fetched_wall is None else round(max(0.0, time.time() - self._fetched_wall), 3)
        return {
            "ok": self._last_error is None,
            "keys": len(self._keys or ()),
            "age_s": age,
            "last_error": self._last_error,
        }

    async def close(self) -> None:
        """Stop a fetch under way; the session belongs to the caller and stays open."""
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


def _refusal(e: jwt.PyJWTError) -> BoardcastError:
    # most specific classes first: InvalidSignatureError is a DecodeError
    reasons: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
        (jwt.InvalidSignatureError, "signature"),
        (jwt.InvalidIssuerError, "issuer"),
        (jwt.InvalidAudienceError, "audience"),
        (jwt.ImmatureSignatureError, "not_yet_valid"),
        (jwt.MissingRequiredClaimError, "missing_claim"),
        (jwt.InvalidAlgorithmError, "algorithm"),
        (jwt.InvalidKeyError, "key"),
        (InvalidSubjectError, "subject"),
    )
    for cls, reason in reasons:
        if isinstance(e, cls):
            return _invalid(reason)
    return _invalid("malformed")
