"""Board membership, visibility and invitations.

Every change to a board's members runs in :meth:`MemberRepo.change`, a transaction that locks
the board row first: changes to one board are serialised, so "the last owner" and "what role
does the caller have now" are read and acted on atomically.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from protocol.model import BoardInfo


@dataclass(frozen=True, slots=True)
class Access:
    """What a user has on a board: a membership role, and the board's visibility."""

    role: str | None
    visibility: str


@dataclass(frozen=True, slots=True)
class DeletedBoard:
    """The tombstone of a deleted board, as its former members may see it."""

    seq: int  # of the board.deleted event
    deleted_by: uuid.UUID
    ts_ms: int


@dataclass(frozen=True, slots=True)
class MemberRecord:
    user_id: uuid.UUID
    name: str
    email: str | None
    role: str


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    id: uuid.UUID
    board_id: uuid.UUID
    role: str
    created_at: dt.datetime
    expires_at: dt.datetime
    max_uses: int
    uses: int


class InvitationGone(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_MEMBER_SQL = """SELECT m.user_id, u.name, u.email, m.role FROM board_members m
                 JOIN users u ON u.id = m.user_id WHERE m.board_id = $1"""
_INVITATION_COLUMNS = "id, board_id, role, created_at, expires_at, max_uses, uses"


class MembershipTx:
    """One board's membership inside a locked transaction."""

    def __init__(self, conn: asyncpg.Connection, board_id: uuid.UUID) -> None:
        self._conn = conn
        self.board_id = board_id

    async def role_of(self, user_id: uuid.UUID) -> str | None:
        role: str | None = await self._conn.fetchval(
            "SELECT role FROM board_members WHERE board_id = $1 AND user_id = $2", self.board_id, user_id
        )
        return role

    async def owners(self) -> int:
        n: int = await self._conn.fetchval(
            "SELECT count(*) FROM board_members WHERE board_id = $1 AND role = 'owner'", self.board_id
        )
        return n

    async def member(self, user_id: uuid.UUID) -> MemberRecord | None:
        row = await self._conn.fetchrow(f"{_MEMBER_SQL} AND m.user_id = $2", self.board_id, user_id)
        return None if row is None else MemberRecord(**dict(row))

    async def add(self, user_id: uuid.UUID, role: str) -> MemberRecord:
        await self._conn.execute(
            "INSERT INTO board_members (board_id, user_id, role) VALUES ($1, $2, $3)",
            self.board_id,
            user_id,
            role,
        )
        return await self._must(user_id)

    async def set_role(self, user_id: uuid.UUID, role: str) -> MemberRecord:
        await self._conn.execute(
            "UPDATE board_members SET role = $3 WHERE board_id = $1 AND user_id = $2",
            self.board_id,
            user_id,
            role,
        )
        if role == "owner":
            # boards.owner_id names the longest-standing owner, kept for listings and audits.
            await self._conn.execute(
                """UPDATE boards SET owner_id = $2 WHERE id = $1 AND NOT EXISTS (
                       SELECT 1 FROM board_members WHERE board_id = $1 AND user_id = boards.owner_id
                       AND role = 'owner')""",
                self.board_id,
                user_id,
            )
        return await self._must(user_id)

    async def remove(self, user_id: uuid.UUID) -> None:
        await self._conn.execute(
            "DELETE FROM board_members WHERE board_id = $1 AND user_id = $2", self.board_id, user_id
        )

    async def use_invitation(self, invitation_id: uuid.UUID) -> None:
        """Count one use; raises :class:`InvitationGone` if it expired or ran out meanwhile."""
        row = await self._conn.fetchrow(
            """UPDATE board_invitations SET uses = uses + 1
               WHERE id = $1 AND board_id = $2 AND revoked_at IS NULL AND expires_at > now()
               AND uses < max_uses RETURNING uses""",
            invitation_id,
            self.board_id,
        )
        if row is None:
            raise InvitationGone("invitation expired or used up")

    async def _must(self, user_id: uuid.UUID) -> MemberRecord:
        rec = await self.member(user_id)
        assert rec is not None
        return rec


class MemberRepo:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def access(self, board_id: uuid.UUID, user_id: uuid.UUID) -> Access | None:
        """The user's role and the board's visibility in one query; None if no such board."""
        row = await self._pool.fetchrow(
            """SELECT b.visibility, m.role FROM boards b
               LEFT JOIN board_members m ON m.board_id = b.id AND m.user_id = $2
               WHERE b.id = $1""",
            board_id,
            user_id,
        )
        return None if row is None else Access(role=row["role"], visibility=row["visibility"])

    async def deleted(self, board_id: uuid.UUID, user_id: uuid.UUID) -> DeletedBoard | None:
        """The tombstone of a board ``user_id`` was a member of when it was deleted; None when
        it was not deleted or the user was not a member (who must learn nothing about it)."""
        row = await self._pool.fetchrow(
            """SELECT seq, deleted_by, deleted_at FROM deleted_boards
               WHERE id = $1 AND $2 = ANY (member_ids)""",
            board_id,
            user_id,
        )
        if row is None:
            return None
        return DeletedBoard(
            seq=row["seq"], deleted_by=row["deleted_by"], ts_ms=int(row["deleted_at"].timestamp() * 1000)
        )

    async def access_many(
        self, board_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
    ) -> tuple[str, dict[uuid.UUID, str]] | None:
        """The board's visibility and the roles of those of ``user_ids`` who are members, in
        one query; None if no such board."""
        rows = await self._pool.fetch(
            """SELECT b.visibility, m.user_id, m.role FROM boards b
               LEFT JOIN board_members m ON m.board_id = b.id AND m.user_id = ANY($2::uuid[])
               WHERE b.id = $1""",
            board_id,
            list(user_ids),
        )
        if not rows:
            return None
        return rows[0]["visibility"], {r["user_id"]: r["role"] for r in rows if r["user_id"] is not None}

    @asynccontextmanager
    async def change(self, board_id: uuid.UUID) -> AsyncIterator[MembershipTx | None]:
        """A transaction holding the board's row lock; ``None`` if the board is gone."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval("SELECT 1 FROM boards WHERE id = $1 FOR UPDATE", board_id)
            yield MembershipTx(conn, board_id) if found else None

    async def members(self, board_id: uuid.UUID) -> list[MemberRecord]:
        rows = await self._pool.fetch(
            f"{_MEMBER_SQL} ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 "
            "WHEN 'member' THEN 2 ELSE 3 END, m.added_at, m.user_id",
            board_id,
        )
        return [MemberRecord(**dict(r)) for r in rows]

    async def find_user(self, *, user_id: uuid.UUID | None, email: str | None) -> uuid.UUID | None:
        if user_id is not None:
            found: uuid.UUID | None = await self._pool.fetchval("SELECT id FROM users WHERE id = $1", user_id)
        else:
            found = await self._pool.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", email)
        return found

    async def set_visibility(self, board_id: uuid.UUID, visibility: str) -> None:
        await self._pool.execute(
            "UPDATE boards SET visibility = $2, updated_at = now() WHERE id = $1", board_id, visibility
        )

    async def board_info(self, board_id: uuid.UUID, role: str) -> BoardInfo | None:
        row = await self._pool.fetchrow(
            "SELECT id, title, description, seq, visibility FROM boards WHERE id = $1", board_id
        )
        return None if row is None else BoardInfo(**dict(row), role=role)

    # ------------------------------------------------------------------ invitations

    async def create_invitation(
        self,
        board_id: uuid.UUID,
        token_hash: bytes,
        role: str,
        created_by: uuid.UUID,
        expires_at: dt.datetime,
        max_uses: int,
    ) -> InvitationRecord:
        row = await self._pool.fetchrow(
            f"""INSERT INTO board_invitations (id, board_id, token_hash, role, created_by, expires_at,
                    max_uses) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_INVITATION_COLUMNS}""",
            uuid.uuid4(),
            board_id,
            token_hash,
            role,
            created_by,
            expires_at,
            max_uses,
        )
        assert row is not None
        return InvitationRecord(**dict(row))

    async def invitations(self, board_id: uuid.UUID) -> list[InvitationRecord]:
        rows = await self._pool.fetch(
            f"""SELECT {_INVITATION_COLUMNS} FROM board_invitations
                WHERE board_id = $1 AND revoked_at IS NULL ORDER BY created_at, id""",
            board_id,
        )
        return [InvitationRecord(**dict(r)) for r in rows]

    async def revoke_invitation(self, board_id: uuid.UUID, invitation_id: uuid.UUID) -> bool:
        done = await self._pool.execute(
            """UPDATE board_invitations SET revoked_at = now()
               WHERE id = $1 AND board_id = $2 AND revoked_at IS NULL""",
            invitation_id,
            board_id,
        )
        return bool(done == "UPDATE 1")

    async def find_invitation(self, token_hash: bytes) -> InvitationRecord | None:
        row = await self._pool.fetchrow(
            f"""SELECT {_INVITATION_COLUMNS} FROM board_invitations
                WHERE token_hash = $1 AND revoked_at IS NULL""",
            token_hash,
        )
        return None if row is None else InvitationRecord(**dict(row))
