"""Accounts, sessions, refresh tokens and personal API tokens.

Secret tokens never reach this module: callers pass their SHA-256 (``bytes``), which is
what the tables keep.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

import asyncpg

MAX_API_TOKENS_PER_USER = 50


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: uuid.UUID
    name: str
    email: str | None
    password_hash: str | None
    external: bool


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    id: uuid.UUID
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


class EmailTaken(Exception):
    pass


class TooManyTokens(Exception):
    pass


class RefreshRefused(enum.Enum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "refresh_token_reused"


@dataclass(frozen=True, slots=True)
class Rotated:
    user: UserRecord
    session_id: uuid.UUID


_USER_COLUMNS = "id, name, email, password_hash, external_issuer IS NOT NULL AS external"


def _user(row: asyncpg.Record) -> UserRecord:
    return UserRecord(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        password_hash=row["password_hash"],
        external=row["external"],
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IdentityRepo:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ users

    async def create_user(self, email: str, name: str, password_hash: str) -> UserRecord:
        try:
            row = await self._pool.fetchrow(
                f"""INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)
                    RETURNING {_USER_COLUMNS}""",
                uuid.uuid4(),
                email,
                name,
                password_hash,
            )
        except asyncpg.UniqueViolationError as e:
            raise EmailTaken(email) from e
        assert row is not None
        return _user(row)

    async def user_by_email(self, email: str) -> UserRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
        )
        return None if row is None else _user(row)

    async def user_by_id(self, user_id: uuid.UUID) -> UserRecord | None:
        row = await self._pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else _user(row)

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._pool.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)

    async def external_user(self, issuer: str, subject: str, email: str | None, name: str) -> UserRecord:
        """The local user of an external identity, created the first time it is seen. An email
        another account already has is left off (no silent account linking)."""
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE external_issuer = $1 AND external_subject = $2"
        row = await self._pool.fetchrow(sql, issuer, subject)
        if row is not None:
            return _user(row)
        async with self._pool.acquire() as conn, conn.transaction():
            taken = email is not None and await conn.fetchval(
                "SELECT 1 FROM users WHERE lower(email) = lower($1)", email
            )
            row = await conn.fetchrow(
                f"""INSERT INTO users (id, email, name, external_issuer, external_subject)
                    VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (external_issuer, external_subject) WHERE external_issuer IS NOT NULL
                    DO UPDATE SET name = users.name
                    RETURNING {_USER_COLUMNS}""",
                uuid.uuid4(),
                None if taken else email,
                name,
                issuer,
                subject,
            )
        assert row is not None
        return _user(row)

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, user_id: uuid.UUID, refresh_hash: bytes, expires_at: dt.datetime
    ) -> uuid.UUID:
        session_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO auth_sessions (id, user_id) VALUES ($1, $2)", session_id, user_id)
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
                refresh_hash,
                session_id,
                expires_at,
            )
        return session_id

    async def rotate_refresh(
        self, old_hash: bytes, new_hash: bytes, expires_at: dt.datetime
    ) -> Rotated | RefreshRefused:
        """Spend ``old_hash`` and issue ``new_hash`` in the same session. A refresh token that
        was already spent means it leaked: the whole session is revoked."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT t.session_id, t.used_at, t.expires_at, s.revoked_at, s.user_id
                   FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id
                   WHERE t.token_hash = $1 FOR UPDATE OF t, s""",
                old_hash,
            )
            if row is None:
                return RefreshRefused.UNKNOWN
            if row["revoked_at"] is not None:
                return RefreshRefused.REVOKED
            if row["used_at"] is not None:
                await conn.execute(
                    """UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'refresh_token_reused'
                       WHERE id = $1""",
                    row["session_id"],
                )
                return RefreshRefused.REUSED
            if row["expires_at"] <= _now():
                return RefreshRefused.EXPIRED
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", old_hash)
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
                new_hash,
                row["session_id"],
                expires_at,
            )
            user = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", row["user_id"])
        assert user is not None
        return Rotated(user=_user(user), session_id=row["session_id"])

    async def session_of_refresh(self, token_hash: bytes) -> uuid.UUID | None:
        sid: uuid.UUID | None = await self._pool.fetchval(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = $1", token_hash
        )
        return sid

    async def session_active(self, session_id: uuid.UUID) -> bool:
        revoked = await self._pool.fetchval(
            "SELECT revoked_at IS NOT NULL FROM auth_sessions WHERE id = $1", session_id
        )
        return revoked is False

    async def revoke_session(self, session_id: uuid.UUID, reason: str) -> None:
        await self._pool.execute(
            """UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $2
               WHERE id = $1 AND revoked_at IS NULL""",
            session_id,
            reason,
        )

    async def revoke_other_sessions(
        self, user_id: uuid.UUID, keep: uuid.UUID | None, reason: str
    ) -> list[uuid.UUID]:
        rows = await self._pool.fetch(
            """UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $3
               WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2 RETURNING id""",
            user_id,
            keep,
            reason,
        )
        return [r["id"] for r in rows]

    # ------------------------------------------------------------------ API tokens

    async def create_api_token(
        self, user_id: uuid.UUID, name: str, token_hash: bytes, expires_at: dt.datetime | None
    ) -> ApiTokenRecord:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialise one user's token creations so the cap holds under concurrency.
            await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
            live = await conn.fetchval(
                """SELECT count(*) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > now())""",
                user_id,
            )
            if live >= MAX_API_TOKENS_PER_USER:
                raise TooManyTokens
            row = await conn.fetchrow(
                """INSERT INTO api_tokens (id, user_id, name, token_hash, expires_at)
                   VALUES ($1, $2, $3, $4, $5)
                   RETURNING id, name, created_at, expires_at, last_used_at""",
                uuid.uuid4(),
                user_id,
                name,
                token_hash,
                expires_at,
            )
        assert row is not None
        return ApiTokenRecord(**dict(row))

    async def list_api_tokens(self, user_id: uuid.UUID) -> list[ApiTokenRecord]:
        rows = await self._pool.fetch(
            """SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens
               WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id""",
            user_id,
        )
        return [ApiTokenRecord(**dict(r)) for r in rows]

    async def revoke_api_token(self, user_id: uuid.UUID, token_id: uuid.UUID) -> bool:
        done = await self._pool.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            token_id,
            user_id,
        )
        return bool(done == "UPDATE 1")

    async def api_token_user(
        self, token_hash: bytes
    ) -> tuple[UserRecord, uuid.UUID, dt.datetime | None] | None:
        """The owner of an unrevoked API token (and the token's id and expiry, which the caller
        checks); marks it used unless it has expired."""
        row = await self._pool.fetchrow(
            """UPDATE api_tokens t SET last_used_at = CASE
                    WHEN t.expires_at IS NULL OR t.expires_at > now() THEN now() ELSE t.last_used_at END
                FROM users u WHERE t.token_hash = $1 AND u.id = t.user_id AND t.revoked_at IS NULL
                RETURNING t.id AS token_id, t.expires_at, u.id, u.name, u.email, u.password_hash,
                    u.external_issuer IS NOT NULL AS external""",
            token_hash,
        )
        if row is None:
            return None
        return _user(row), row["token_id"], row["expires_at"]

    async def revoked(
        self, session_ids: list[uuid.UUID], token_ids: list[uuid.UUID]
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """Which of these sessions and API tokens no longer stand (one query for each)."""
        sessions = await self._pool.fetch(
            "SELECT id FROM auth_sessions WHERE id = ANY($1::uuid[]) AND revoked_at IS NOT NULL",
            session_ids,
        )
        tokens = await self._pool.fetch(
            """SELECT id FROM api_tokens WHERE id = ANY($1::uuid[])
               AND (revoked_at IS NOT NULL OR expires_at <= now())""",
            token_ids,
        )
        return {r["id"] for r in sessions}, {r["id"] for r in tokens}

    async def api_token_active(self, token_id: uuid.UUID) -> bool:
        live = await self._pool.fetchval(
            """SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())""",
            token_id,
        )
        return live is not None
