"""The board repository: the only code that reads and writes board rows and the event log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from protocol.model import BoardInfo, Card, Column


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the event log; ``body`` is the event's JSON encoding."""

    seq: int
    kind: str
    body: str
    author: uuid.UUID
    request_id: str | None
    ts_ms: int
    fingerprint: int | None = None  # of the command behind ``request_id`` (see commands_fingerprint)


@dataclass(slots=True)
class LoadedBoard:
    id: uuid.UUID
    title: str
    description: str
    owner_id: uuid.UUID
    seq: int
    epoch: int  # of the latest activation (see BoardRepo.claim_epoch)
    columns: list[Column]
    cards: list[Card]
    # (author, request id, seq, fingerprint of the command; None for events logged before 0004)
    recent_requests: list[tuple[uuid.UUID, str, int, int | None]]


@dataclass(slots=True)
class Batch:
    """Everything one group commit writes: final row states, deletions and the events."""

    board_id: uuid.UUID
    base_seq: int
    new_seq: int
    title: str
    description: str
    # The epoch of the activation that built the batch (BoardRepo.claim_epoch): the commit is
    # refused with FencedOut once another activation has taken a newer one.
    epoch: int
    columns: list[Column] = field(default_factory=list)
    deleted_columns: list[uuid.UUID] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    deleted_cards: list[uuid.UUID] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    # Stored on the batch's last event: how a writer that lost the reply to its commit tells
    # its own commit from someone else's at the same seq (see BoardRepo.commit_landed).
    commit_token: uuid.UUID = field(default_factory=uuid.uuid4)


_STALE_SQLSTATE = "BC001"  # raised by boardcast_persist_batch when the seq fence fails
_FENCED_SQLSTATE = "BC002"  # raised by boardcast_persist_batch when the epoch fence fails


class StaleBoard(Exception):
    """The board's seq in Postgres is not the one this actor built on: someone else wrote."""


class FencedOut(Exception):
    """Another activation of the board took a newer epoch: this one may never commit again.
    Nothing of the refused batch was written; its owner must stop, not reload and retry."""


class BoardRepo:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ensure_user(self, user_id: uuid.UUID, name: str, email: str | None) -> None:
        await self._pool.execute(
            """INSERT INTO users (id, name, email) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO NOTHING""",
            user_id,
            name,
            email,
        )

    async def create_board(
        self, owner_id: uuid.UUID, title: str, description: str, visibility: str = "private"
    ) -> BoardInfo:
        board_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO boards (id, title, description, owner_id, visibility)
                   VALUES ($1, $2, $3, $4, $5)""",
                board_id,
                title,
                description,
                owner_id,
                visibility,
            )
            await conn.execute(
                "INSERT INTO board_members (board_id, user_id, role) VALUES ($1, $2, 'owner')",
                board_id,
                owner_id,
            )
        return BoardInfo(
            id=board_id, title=title, description=description, seq=0, role="owner", visibility=visibility
        )

    async def list_boards(self, user_id: uuid.UUID) -> list[BoardInfo]:
        rows = await self._pool.fetch(
            """SELECT b.id, b.title, b.description, b.seq, m.role, b.visibility
               FROM board_members m JOIN boards b ON b.id = m.board_id
               WHERE m.user_id = $1 ORDER BY b.created_at, b.id""",
            user_id,
        )
        return [BoardInfo(**dict(r)) for r in rows]

    async def claim_epoch(self, board_id: uuid.UUID) -> int | None:
        """Take a new epoch for the board (None if there is no such board): called by each
        activation before it loads the board, so that every earlier activation, in this
        process or another, is fenced out of committing. A statement of its own, in autocommit:
        a commit of the older activation either landed before it (and the load that follows
        sees it) or waits on the row lock and then finds the epoch changed."""
        epoch = await self._pool.fetchval(
            "UPDATE boards SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch", board_id
        )
        return None if epoch is None else int(epoch)

    async def load_board(self, board_id: uuid.UUID, recent: int) -> LoadedBoard | None:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            b = await conn.fetchrow(
                "SELECT id, title, description, owner_id, seq, epoch FROM boards WHERE id = $1",
                board_id,
            )
            if b is None:
                return None
            cols = await conn.fetch(
                "SELECT id, title, rank FROM columns WHERE board_id = $1 ORDER BY rank", board_id
            )
            cards = await conn.fetch(
                """SELECT id, column_id, title, description, rank FROM cards
                   WHERE board_id = $1 ORDER BY column_id, rank""",
                board_id,
            )
            reqs = await conn.fetch(
                """SELECT author, request_id, seq, fingerprint FROM board_events
                   WHERE board_id = $1 AND seq > $2 AND request_id IS NOT NULL
                   ORDER BY seq""",
                board_id,
                max(0, b["seq"] - recent),
            )
        return LoadedBoard(
            id=b["id"],
            title=b["title"],
            description=b["description"],
            owner_id=b["owner_id"],
            seq=b["seq"],
            epoch=b["epoch"],
            columns=[Column(id=r["id"], title=r["title"], rank=r["rank"]) for r in cols],
            cards=[
                Card(
                    id=r["id"],
                    column_id=r["column_id"],
                    title=r["title"],
                    description=r["description"],
                    rank=r["rank"],
                )
                for r in cards
            ],
            recent_requests=[(r["author"], r["request_id"], r["seq"], r["fingerprint"]) for r in reqs],
        )

    async def events_since(self, board_id: uuid.UUID, since_seq: int, limit: int) -> list[StoredEvent]:
        rows = await self._pool.fetch(
            """SELECT seq, kind, body::text AS body, author, request_id, created_at
               FROM board_events WHERE board_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            board_id,
            since_seq,
            limit,
        )
        return [
            StoredEvent(
                seq=r["seq"],
                kind=r["kind"],
                body=r["body"],
                author=r["author"],
                request_id=r["request_id"],
                ts_ms=int(r["created_at"].timestamp() * 1000),
            )
            for r in rows
        ]

    async def persist(self, batch: Batch) -> None:
        """Write one group commit atomically, fenced on the board's seq and epoch: one
        statement (a function call, see migrations 0002 and 0004), so one round trip and no
        BEGIN/COMMIT. Raises FencedOut if another activation took a newer epoch, StaleBoard
        if the seq moved (or the board is gone)."""
        cols, cards, ev = batch.columns, batch.cards, batch.events
        try:
            await self._pool.execute(
                """SELECT boardcast_persist_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                       $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)""",
                batch.board_id,
                batch.base_seq,
                batch.new_seq,
                batch.title,
                batch.description,
                batch.deleted_cards,
                batch.deleted_columns,
                [c.id for c in cols],
                [c.title for c in cols],
                [c.rank for c in cols],
                [c.id for c in cards],
                [c.column_id for c in cards],
                [c.title for c in cards],
                [c.description for c in cards],
                [c.rank for c in cards],
                [e.seq for e in ev],
                [e.kind for e in ev],
                [e.body for e in ev],
                [e.author for e in ev],
                [e.request_id for e in ev],
                [e.ts_ms for e in ev],
                [e.fingerprint for e in ev],
                batch.commit_token,
                batch.epoch,
            )
        except asyncpg.PostgresError as e:
            state = getattr(e, "sqlstate", None)
            if state == _FENCED_SQLSTATE:
                raise FencedOut(f"board {batch.board_id}: epoch {batch.epoch} was replaced") from e
            if state == _STALE_SQLSTATE:
                raise StaleBoard(f"board {batch.board_id} is not at seq {batch.base_seq}") from e
            raise

    async def commit_landed(self, board_id: uuid.UUID, last_seq: int, token: uuid.UUID) -> bool:
        """Whether the group commit that carried ``token`` (and ended at ``last_seq``) is in the
        event log: asked when the reply to a commit was lost. The board's seq alone cannot
        tell, since another writer may have committed the same seq."""
        found = await self._pool.fetchval(
            "SELECT commit_token FROM board_events WHERE board_id = $1 AND seq = $2", board_id, last_seq
        )
        return bool(found == token)

    async def delete_board(self, board_id: uuid.UUID, deleted_by: uuid.UUID, epoch: int | None = None) -> int:
        """Delete the board and everything in it, leaving a tombstone that remembers its final
        seq and its members. Returns the seq of the ``board.deleted`` event. With ``epoch``
        it is fenced like a commit: an activation that another one replaced gets FencedOut."""
        async with self._pool.acquire() as conn, conn.transaction():
            seq = await conn.fetchval(
                """INSERT INTO deleted_boards (id, seq, deleted_by, member_ids)
                   SELECT b.id, b.seq + 1, $2,
                          ARRAY(SELECT user_id FROM board_members WHERE board_id = b.id)
                   FROM boards b WHERE b.id = $1 AND ($3::bigint IS NULL OR b.epoch = $3)
                   RETURNING seq""",
                board_id,
                deleted_by,
                epoch,
            )
            if seq is None and epoch is not None:
                current = await conn.fetchval("SELECT epoch FROM boards WHERE id = $1", board_id)
                if current is not None:
                    raise FencedOut(f"board {board_id} is at epoch {current}, not {epoch}")
            await conn.execute("DELETE FROM boards WHERE id = $1", board_id)
        return int(seq) if seq is not None else 0
