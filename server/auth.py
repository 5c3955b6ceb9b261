"""Authentication: who a request or WebSocket upgrade comes from (see docs/ACCESS.md).

Credentials come as ``Authorization: Bearer`` (an access token, a personal API token or an
OIDC provider's JWT), as the access cookie, or on ``/ws`` as ``?access_token=``. Passwords are
argon2id; access tokens are HS256 JWTs; refresh, API and invitation tokens are random strings
stored as their SHA-256.

Revocation: a node trusts its last look at a session or API token for ``session_check_s``, so
revoking takes effect at once on the revoking node and within that time on the others.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import argon2
import jwt
import structlog
from aiohttp import web

from actors import Metrics
from protocol.errors import BoardcastError, ErrorCode
from server.access import DEV_USER, User, Via
from server.config import Settings
from server.oidc import OidcVerifier
from server.ratelimit import is_trusted_proxy
from storage.identity import IdentityRepo, RefreshRefused, UserRecord

log = structlog.get_logger(__name__)

ACCESS_COOKIE = "boardcast_access"
REFRESH_COOKIE = "boardcast_refresh"
CSRF_COOKIE = "boardcast_csrf"
CSRF_HEADER = "X-CSRF-Token"
REFRESH_PREFIX = "bcr_"
API_TOKEN_PREFIX = "bcp_"
INVITATION_PREFIX = "bci_"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_TOKEN_CHARS = 8192
_MAX_API_TOKEN_CHARS = 128
_CACHE_LIMIT = 100_000


def new_secret_token(prefix: str) -> tuple[str, bytes]:
    """A fresh random token and the SHA-256 that is stored in its place."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def unauthorized(message: str = "authentication required", reason: str | None = None) -> BoardcastError:
    return BoardcastError(ErrorCode.UNAUTHORIZED, message, {"reason": reason} if reason else None)


def _hasher(profile: str) -> argon2.PasswordHasher:
    if profile == "fast":  # tests and development only; refused in production (config)
        return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return argon2.PasswordHasher()  # argon2id, RFC 9106 low-memory profile


@dataclass(frozen=True, slots=True)
class IssuedSession:
    user: UserRecord
    session_id: uuid.UUID
    access_token: str
    refresh_token: str
    expires_in: int


class _TrustCache:
    """Recent answers to "is this session / API token still good?", each trusted until a
    deadline. Local revocations are written in at once."""

    __slots__ = ("_entries", "_ttl")

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, now: float) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < now:
            return False, None
        return True, entry[1]

    def put(self, key: Any, value: Any, now: float, ttl_s: float | None = None) -> None:
        if len(self._entries) >= _CACHE_LIMIT:
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            if len(self._entries) >= _CACHE_LIMIT:
                self._entries.clear()
        self._entries[key] = (now + (self._ttl if ttl_s is None else ttl_s), value)

    def drop(self, key: Any) -> None:
        self._entries.pop(key, None)


class Authenticator:
    def __init__(
        self, settings: Settings, identity: IdentityRepo, metrics: Metrics, oidc: OidcVerifier | None
    ) -> None:
        self._s = settings
        self._identity = identity
        self._metrics = metrics
        self._oidc = oidc
        self._hasher = _hasher(settings.password_hash_profile)
        self._dummy_hash: str | None = None
        self._sessions = _TrustCache(settings.session_check_s)
        self._api_tokens = _TrustCache(settings.session_check_s)
        # Access tokens already verified, by their exact text, until they expire: verifying an
        # HS256 JWT costs ~50 µs of Python (base64, JSON, HMAC, claim checks), a fifth of a REST
        # read's CPU, and a client sends the same token with every request for its lifetime.
        # A tampered token is a different string, so it misses and is verified in full.
        self._verified = _TrustCache(settings.access_token_ttl_s)
        self._external: dict[tuple[str, str], UserRecord] = {}

    @property
    def disabled(self) -> bool:
        return self._s.auth == "none"

    @property
    def oidc(self) -> OidcVerifier | None:
        return self._oidc

    def metrics_event(self, event: str, outcome: str) -> None:
        self._metrics.auth.labels(event=event, outcome=outcome).inc()

    # ------------------------------------------------------------------ passwords

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def check_password(self, user: UserRecord | None, password: str) -> bool:
        """Whether ``password`` is the user's. With no user (or no password) a dummy hash is
        still verified, so an unknown email costs the same time as a wrong password."""
        if user is None or user.password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash_password(secrets.token_urlsafe(16))
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            return False
        ok = await asyncio.to_thread(self._verify, user.password_hash, password)
        if ok and self._hasher.check_needs_rehash(user.password_hash):
            await self._identity.set_password(user.id, await self.hash_password(password))
        return ok

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    # ------------------------------------------------------------------ sessions

    def _access_token(self, user: UserRecord, session_id: uuid.UUID) -> str:
        now = int(time.time())
        claims = {
            "iss": self._s.jwt_issuer,
            "aud": self._s.jwt_audience,
            "sub": str(user.id),
            "sid": str(session_id),
            "name": user.name,
            "iat": now,
            "exp": now + int(self._s.access_token_ttl_s),
        }
        if user.email:
            claims["email"] = user.email
        return jwt.encode(claims, self._s.secret, algorithm="HS256")

    def _refresh_expiry(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._s.refresh_token_ttl_s)

    async def start_session(self, user: UserRecord) -> IssuedSession:
        refresh, refresh_hash = new_secret_token(REFRESH_PREFIX)
        sid = await self._identity.create_session(user.id, refresh_hash, self._refresh_expiry())
        return self._issued(user, sid, refresh)

    def _issued(self, user: UserRecord, sid: uuid.UUID, refresh: str) -> IssuedSession:
        return IssuedSession(
            user=user,
            session_id=sid,
            access_token=self._access_token(user, sid),
            refresh_token=refresh,
            expires_in=int(self._s.access_token_ttl_s),
        )

    async def refresh(self, refresh_token: str) -> IssuedSession:
        new, new_hash = new_secret_token(REFRESH_PREFIX)
        outcome = await self._identity.rotate_refresh(
            token_hash(refresh_token), new_hash, self._refresh_expiry()
        )
        if isinstance(outcome, RefreshRefused):
            self._metrics.auth.labels(event="refresh", outcome=outcome.value).inc()
            if outcome is RefreshRefused.REUSED:
                sid = await self._identity.session_of_refresh(token_hash(refresh_token))
                if sid is not None:
                    self.forget_session(sid)
                log.warning("refresh_token_reused", session_id=str(sid))
                raise unauthorized("refresh token already used; the session is revoked", outcome.value)
            raise unauthorized("invalid refresh token", outcome.value)
        self._metrics.auth.labels(event="refresh", outcome="ok").inc()
        return self._issued(outcome.user, outcome.session_id, new)

    async def end_session(self, session_id: uuid.UUID, reason: str) -> None:
        await self._identity.revoke_session(session_id, reason)
        self.forget_session(session_id)

    def forget_session(self, session_id: uuid.UUID) -> None:
        """Refuse this session's access tokens on this node from now on."""
        self._sessions.put(session_id, False, time.monotonic(), ttl_s=self._s.access_token_ttl_s)

    def forget_api_token(self, token_id: uuid.UUID) -> None:
        self._api_tokens.put(("id", token_id), False, time.monotonic(), ttl_s=self._s.refresh_token_ttl_s)

    # ------------------------------------------------------------------ requests

    async def authenticate(self, request: web.Request, *, websocket: bool = False) -> User | None:
        """The caller, or None when no credentials were offered. Bad credentials raise 401
        (or ``token_expired``); a cookie-authenticated mutation without the CSRF header, 403."""
        if self.disabled:
            return DEV_USER
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthorized("Authorization must be 'Bearer <token>'", "malformed")
            return await self.from_token(token.strip())
        if websocket:
            query = request.query.get("access_token")
            if query is not None:
                return await self.from_token(query)
        cookie = request.cookies.get(ACCESS_COOKIE)
        if cookie is None:
            return None
        user = await self.from_token(cookie)
        if websocket:
            _check_origin(request, self._s)
        elif request.method not in _SAFE_METHODS:
            check_csrf(request)
        return User(
            id=user.id,
            name=user.name,
            email=user.email,
            via=user.via,
            session_id=user.session_id,
            expires_at=user.expires_at,
            cookie=True,
        )

    async def from_token(self, token: str) -> User:
        if len(token) > _MAX_TOKEN_CHARS:
            raise unauthorized("invalid token", "malformed")
        if token.startswith(API_TOKEN_PREFIX):
            return await self._from_api_token(token)
        if self._oidc is not None and OidcVerifier.claims_issuer(token) == self._s.oidc_issuer:
            return await self._from_oidc(token)
        return await self._from_access_token(token)

    async def _from_access_token(self, token: str) -> User:
        now = time.monotonic()
        known, cached = self._verified.get(token, now)
        if known and isinstance(cached, User) and cached.session_id is not None:
            await self._check_session(cached.session_id)
            return cached
        try:
            claims = jwt.decode(
                token,
                self._s.secret,
                algorithms=["HS256"],
                audience=self._s.jwt_audience,
                issuer=self._s.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
            )
            user_id, sid = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
            exp = float(claims["exp"])
        except jwt.ExpiredSignatureError:
            self._metrics.auth.labels(event="access_token", outcome="expired").inc()
            raise BoardcastError(ErrorCode.TOKEN_EXPIRED, "token expired; refresh it") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, KeyError):
            self._metrics.auth.labels(event="access_token", outcome="invalid").inc()
            raise unauthorized("invalid token", "invalid") from None
        await self._check_session(sid)
        user = User(
            id=user_id,
            name=str(claims.get("name", "")),
            email=claims.get("email"),
            via=Via.SESSION,
            session_id=sid,
            expires_at=exp,
        )
        # trusted until its own expiry, counted on the monotonic clock from now
        self._verified.put(token, user, now, ttl_s=exp - time.time())
        return user

    async def _check_session(self, sid: uuid.UUID) -> None:
        now = time.monotonic()
        known, ok = self._sessions.get(sid, now)
        if not known:
            ok = await self._identity.session_active(sid)
            self._sessions.put(sid, ok, now)
        if not ok:
            self._metrics.auth.labels(event="access_token", outcome="revoked").inc()
            raise unauthorized("session revoked; sign in again", "revoked")

    async def _from_api_token(self, token: str) -> User:
        # Cached by the token's text: a hit costs a dictionary lookup, not a SHA-256. Ours are
        # 47 characters; a much longer one is refused unread, so that the cache (which keeps
        # refusals too) holds no long strings.
        if len(token) > _MAX_API_TOKEN_CHARS:
            self._metrics.auth.labels(event="api_token", outcome="invalid").inc()
            raise unauthorized("invalid or revoked API token", "invalid")
        now = time.monotonic()
        known, user = self._api_tokens.get(token, now)
        if not known:
            found = await self._identity.api_token_user(token_hash(token))
            user = None
            if found is not None:
                record, token_id, expires = found
                user = User(
                    id=record.id,
                    name=record.name,
                    email=record.email,
                    via=Via.API_TOKEN,
                    token_id=token_id,
                    expires_at=None if expires is None else expires.timestamp(),
                )
            self._api_tokens.put(token, user, now)
        if not isinstance(user, User) or self._api_tokens.get(("id", user.token_id), now)[0]:
            self._metrics.auth.labels(event="api_token", outcome="invalid").inc()
            raise unauthorized("invalid or revoked API token", "invalid")
        if user.expires_at is not None and user.expires_at <= time.time():
            raise BoardcastError(ErrorCode.TOKEN_EXPIRED, "API token expired")
        return user

    async def _from_oidc(self, token: str) -> User:
        assert self._oidc is not None
        ident = await self._oidc.verify(token)
        key = (ident.issuer, ident.subject)
        record = self._external.get(key)
        if record is None:
            name = (ident.name or ident.email or ident.subject)[:200]
            record = await self._identity.external_user(ident.issuer, ident.subject, ident.email, name)
            if len(self._external) >= _CACHE_LIMIT:
                self._external.clear()
            self._external[key] = record
            self._metrics.auth.labels(event="oidc", outcome="ok").inc()
        return User(
            id=record.id, name=record.name, email=record.email, via=Via.OIDC, expires_at=ident.expires_at
        )


def check_csrf(request: web.Request) -> None:
    """Double submit: the header must repeat the CSRF cookie, which other sites cannot read."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise BoardcastError(
            ErrorCode.FORBIDDEN,
            f"cookie-authenticated changes need the {CSRF_HEADER} header",
            {"reason": "csrf"},
        )


def _check_origin(request: web.Request, settings: Settings) -> None:
    """A browser sends cookies with any site's WebSocket: only our own pages may use them.
    Ours are the pages of the host the browser addressed (``Host``, or behind a proxy that
    rewrites it, the ``X-Forwarded-Host`` a trusted proxy sets: the last one, the nearest
    proxy's) and those of ``BOARDCAST_ALLOWED_ORIGINS``. A page cannot set either header on a
    WebSocket, so another site's page cannot pass for ours."""
    origin = request.headers.get("Origin", "").strip().rstrip("/").lower()
    host = request.headers.get("Host", "")
    if is_trusted_proxy(request.remote, settings.trusted_proxies):
        forwarded = ",".join(request.headers.getall("X-Forwarded-Host", ()))
        host = forwarded.rsplit(",", 1)[-1].strip() or host
    if not origin or (origin not in settings.allowed_origins and origin.split("://", 1)[-1] != host.lower()):
        raise BoardcastError(
            ErrorCode.FORBIDDEN,
            "a cookie-authenticated WebSocket must come from this site",
            {"reason": "origin"},
        )


def csrf_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
