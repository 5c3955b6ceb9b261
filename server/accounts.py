"""Accounts over REST: register, log in, refresh, log out, the caller's profile and password,
and personal API tokens (docs/ACCESS.md)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec
import structlog
from aiohttp import web

from protocol.errors import BoardcastError, ErrorCode, not_found
from protocol.model import Title
from server.access import User, current_user
from server.auth import (
    ACCESS_COOKIE,
    API_TOKEN_PREFIX,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    IssuedSession,
    check_csrf,
    csrf_token,
    new_secret_token,
    token_hash,
    unauthorized,
)
from server.guard import Tier
from server.http import Body, Route, json_response, path_uuid, read_body, require_json
from server.keys import AUTH, GUARD, IDENTITY, SETTINGS
from storage.identity import ApiTokenRecord, EmailTaken, TooManyTokens, UserRecord

log = structlog.get_logger(__name__)

# No "@", control characters or spaces in either part. The class is spelled out rather than
# written \s, which means other characters in Python (msgspec) than in ECMA-262 (the dialect
# of JSON Schema patterns: validators and generated clients): the schema admits exactly what
# the server does. (?!\n) because Python's `$` also matches before a final newline.
_ADDRESS_CHAR = r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
Email = Annotated[
    str,
    msgspec.Meta(min_length=3, max_length=254, pattern=rf"^{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+(?!\n)$"),
]
NewPassword = Annotated[str, msgspec.Meta(min_length=8, max_length=256, pattern="^[^\x00]*$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Opaque = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
SessionKind = Literal["token", "cookie"]

# ------------------------------------------------------------------ bodies


class Register(Body):
    email: Email
    password: NewPassword
    name: Title
    session: SessionKind = "token"


class Login(Body):
    email: Email
    password: Password
    session: SessionKind = "token"


class Refresh(Body):
    refresh_token: Opaque | None = None
    session: SessionKind = "token"


class Logout(Body):
    refresh_token: Opaque | None = None


class PasswordChange(Body):
    current_password: Password
    new_password: NewPassword


class TokenCreate(Body):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern="^[^\x00]*$")]
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None


class UserOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str | None
    name: str


class SessionOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    user: UserOut
    expires_in: int  # seconds the access token lives
    access_token: str | None = None
    refresh_token: str | None = None
    token_type: str | None = None
    csrf_token: str | None = None


class TokenOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


class TokenCreated(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    token: str  # shown this once; Boardcast keeps only its hash
    created_at: dt.datetime
    expires_at: dt.datetime | None


class TokenList(msgspec.Struct):
    tokens: list[TokenOut]


# ------------------------------------------------------------------ helpers


def _user_out(u: UserRecord | User) -> UserOut:
    return UserOut(id=u.id, email=u.email, name=u.name)


def _session_response(request: web.Request, issued: IssuedSession, kind: str, status: int) -> web.Response:
    user = _user_out(issued.user)
    if kind == "token":
        return json_response(
            SessionOut(
                user=user,
                expires_in=issued.expires_in,
                access_token=issued.access_token,
                refresh_token=issued.refresh_token,
                token_type="Bearer",
            ),
            status,
        )
    s = request.app[SETTINGS]
    csrf = csrf_token()
    resp = json_response(SessionOut(user=user, expires_in=issued.expires_in, csrf_token=csrf), status)
    secure = s.production
    resp.set_cookie(
        ACCESS_COOKIE,
        issued.access_token,
        max_age=int(s.access_token_ttl_s),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    resp.set_cookie(
        REFRESH_COOKIE,
        issued.refresh_token,
        max_age=int(s.refresh_token_ttl_s),
        path="/api/v1/auth",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    resp.set_cookie(
        CSRF_COOKIE, csrf, max_age=int(s.refresh_token_ttl_s), path="/", samesite="Strict", secure=secure
    )
    return resp


def _check_session_request(request: web.Request, kind: SessionKind) -> None:
    """Login CSRF: another site's page can post a register, login or refresh to Boardcast from
    its visitor's browser, as a form with enctype="text/plain" whose body reads as JSON. Answered
    with cookies, that signs the visitor in to an account the attacker holds. A cookie session
    must therefore be asked for as JSON, which such a page cannot send; token answers are
    unreadable to it, so they keep taking any Content-Type (curl -d sends a form type)."""
    if kind == "cookie":
        require_json(request, 'a "cookie" session')


def _clear_cookies(resp: web.StreamResponse) -> None:
    resp.del_cookie(ACCESS_COOKIE, path="/")
    resp.del_cookie(REFRESH_COOKIE, path="/api/v1/auth")
    resp.del_cookie(CSRF_COOKIE, path="/")


def _refresh_token_of(request: web.Request, given: str | None) -> str | None:
    """The refresh token from the body, else from the cookie (then CSRF is required)."""
    if given is not None:
        return given
    cookie = request.cookies.get(REFRESH_COOKIE)
    if cookie is not None:
        check_csrf(request)
    return cookie


def _credential_manager(request: web.Request) -> User:
    user = current_user(request)
    if not user.manages_credentials:
        raise BoardcastError(
            ErrorCode.FORBIDDEN,
            "API tokens and external identities cannot manage passwords or API tokens; sign in",
            {"via": user.via.value},
        )
    return user


# ------------------------------------------------------------------ accounts


async def register(request: web.Request) -> web.Response:
    body: Register = await read_body(request, Register)
    _check_session_request(request, body.session)
    auth, identity = request.app[AUTH], request.app[IDENTITY]
    try:
        record = await identity.create_user(body.email, body.name, await auth.hash_password(body.password))
    except EmailTaken:
        raise BoardcastError(ErrorCode.CONFLICT, "an account with this email already exists") from None
    log.info("user_registered", user_id=str(record.id))
    request.app[AUTH].metrics_event("register", "ok")
    return _session_response(request, await auth.start_session(record), body.session, 201)


async def login(request: web.Request) -> web.Response:
    body: Login = await read_body(request, Login)
    _check_session_request(request, body.session)
    app = request.app
    # Guessing one account's password from many addresses is throttled per email too.
    guard = app[GUARD]
    await guard.admit(request, Tier.AUTH, f"email:{body.email.lower()}")
    record = await app[IDENTITY].user_by_email(body.email)
    if not await app[AUTH].check_password(record, body.password) or record is None:
        app[AUTH].metrics_event("login", "refused")
        log.info("login_refused", client=guard.client(request))
        raise unauthorized("invalid email or password")
    app[AUTH].metrics_event("login", "ok")
    return _session_response(request, await app[AUTH].start_session(record), body.session, 200)


async def refresh(request: web.Request) -> web.Response:
    body: Refresh = await read_body(request, Refresh) if request.can_read_body else Refresh()
    # Refreshing by the refresh cookie answers with cookies whatever the body says; that token
    # is the browser's own, and the X-CSRF-Token header it needs keeps other sites out.
    _check_session_request(request, body.session)
    token = _refresh_token_of(request, body.refresh_token)
    if token is None:
        raise unauthorized("no refresh token", "missing")
    kind = body.session if body.refresh_token is not None else "cookie"
    return _session_response(request, await request.app[AUTH].refresh(token), kind, 200)


async def logout(request: web.Request) -> web.Response:
    body: Logout = await read_body(request, Logout) if request.can_read_body else Logout()
    auth, identity = request.app[AUTH], request.app[IDENTITY]
    token = _refresh_token_of(request, body.refresh_token)
    session_id: uuid.UUID | None = None
    if token is not None:
        session_id = await identity.session_of_refresh(token_hash(token))
    else:
        user = await auth.authenticate(request)
        session_id = user.session_id if user is not None else None
        if user is None:
            raise unauthorized()
    if session_id is None:
        raise unauthorized("nothing to log out: not a session", "not_a_session")
    await auth.end_session(session_id, "logout")
    resp = web.Response(status=204)
    _clear_cookies(resp)
    return resp


async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    record = await request.app[IDENTITY].user_by_id(user.id)
    if record is None:
        raise unauthorized("this account no longer exists", "unknown_user")
    return json_response(_user_out(record))


async def change_password(request: web.Request) -> web.Response:
    user = _credential_manager(request)
    body: PasswordChange = await read_body(request, PasswordChange)
    auth, identity = request.app[AUTH], request.app[IDENTITY]
    record = await identity.user_by_id(user.id)
    if record is None or not await auth.check_password(record, body.current_password):
        raise unauthorized("the current password is wrong", "wrong_password")
    await identity.set_password(user.id, await auth.hash_password(body.new_password))
    for sid in await identity.revoke_other_sessions(user.id, user.session_id, "password_changed"):
        auth.forget_session(sid)
    log.info("password_changed", user_id=str(user.id))
    return web.Response(status=204)


# ------------------------------------------------------------------ API tokens


def _token_out(t: ApiTokenRecord) -> TokenOut:
    return TokenOut(
        id=t.id, name=t.name, created_at=t.created_at, expires_at=t.expires_at, last_used_at=t.last_used_at
    )


async def create_token(request: web.Request) -> web.Response:
    user = _credential_manager(request)
    body: TokenCreate = await read_body(request, TokenCreate)
    token, digest = new_secret_token(API_TOKEN_PREFIX)
    expires = (
        None
        if body.expires_in_days is None
        else dt.datetime.now(dt.UTC) + dt.timedelta(days=body.expires_in_days)
    )
    try:
        rec = await request.app[IDENTITY].create_api_token(user.id, body.name, digest, expires)
    except TooManyTokens:
        raise BoardcastError(ErrorCode.CONFLICT, "too many API tokens; revoke some first") from None
    log.info("api_token_created", user_id=str(user.id), token_id=str(rec.id))
    return json_response(
        TokenCreated(
            id=rec.id, name=rec.name, token=token, created_at=rec.created_at, expires_at=rec.expires_at
        ),
        201,
    )


async def list_tokens(request: web.Request) -> web.Response:
    user = _credential_manager(request)
    tokens = await request.app[IDENTITY].list_api_tokens(user.id)
    return json_response(TokenList([_token_out(t) for t in tokens]))


async def revoke_token(request: web.Request) -> web.Response:
    user = _credential_manager(request)
    token_id = path_uuid(request, "token_id")
    if not await request.app[IDENTITY].revoke_api_token(user.id, token_id):
        raise not_found("token", token_id)
    request.app[AUTH].forget_api_token(token_id)
    log.info("api_token_revoked", user_id=str(user.id), token_id=str(token_id))
    return web.Response(status=204)


_A = "/api/v1/auth"
_ME = "/api/v1/users/me"
ROUTES: list[Route] = [
    Route(
        "POST",
        f"{_A}/register",
        register,
        "Create an account and sign in",
        Register,
        SessionOut,
        201,
        public=True,
        tier=Tier.AUTH,
        errors=(409, 415),
    ),
    Route(
        "POST",
        f"{_A}/login",
        login,
        "Sign in with email and password",
        Login,
        SessionOut,
        public=True,
        tier=Tier.AUTH,
        errors=(401, 415),
    ),
    Route(
        "POST",
        f"{_A}/refresh",
        refresh,
        "Trade a refresh token for new tokens (rotation)",
        Refresh,
        SessionOut,
        public=True,
        tier=Tier.AUTH,
        body_optional=True,
        errors=(401, 403, 415),
    ),
    Route(
        "POST",
        f"{_A}/logout",
        logout,
        "End the session",
        Logout,
        status=204,
        public=True,
        body_optional=True,
        errors=(401, 403),
    ),
    Route("GET", _ME, me, "The caller", response=UserOut),
    Route(
        "POST",
        f"{_ME}/password",
        change_password,
        "Change the password (ends other sessions)",
        PasswordChange,
        status=204,
        tier=Tier.AUTH,
    ),
    Route(
        "POST",
        f"{_ME}/tokens",
        create_token,
        "Create a personal API token (shown once)",
        TokenCreate,
        TokenCreated,
        201,
        errors=(409,),
    ),
    Route("GET", f"{_ME}/tokens", list_tokens, "The caller's API tokens", response=TokenList, errors=(403,)),
    Route("DELETE", f"{_ME}/tokens/{{token_id}}", revoke_token, "Revoke an API token", status=204),
]
