"""The board repository: the only code that reads and writes board rows and the event log."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from protocol.model import (
    Attachment,
    BoardInfo,
    Card,
    Checklist,
    ChecklistItem,
    Column,
    Comment,
    CustomField,
    FieldOption,
    Label,
)


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
    allow_wip_overflow: bool = False
    labels: list[Label] = field(default_factory=list)
    fields: list[CustomField] = field(default_factory=list)
    checklists: list[Checklist] = field(default_factory=list)
    items: list[ChecklistItem] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    members: dict[uuid.UUID, str] = field(default_factory=dict)  # user id -> name


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
    allow_wip_overflow: bool = False
    # Per table: the final state of each changed row, and the ids of deleted rows.
    columns: list[Column] = field(default_factory=list)
    deleted_columns: list[uuid.UUID] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    deleted_cards: list[uuid.UUID] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    deleted_labels: list[uuid.UUID] = field(default_factory=list)
    fields: list[CustomField] = field(default_factory=list)
    deleted_fields: list[uuid.UUID] = field(default_factory=list)
    checklists: list[Checklist] = field(default_factory=list)
    deleted_checklists: list[uuid.UUID] = field(default_factory=list)
    items: list[ChecklistItem] = field(default_factory=list)
    deleted_items: list[uuid.UUID] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    deleted_comments: list[uuid.UUID] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    deleted_attachments: list[uuid.UUID] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    # Stored on the batch's last event: how a writer that lost the reply to its commit tells
    # its own commit from someone else's at the same seq (see BoardRepo.commit_landed).
    commit_token: uuid.UUID = field(default_factory=uuid.uuid4)


_STALE_SQLSTATE = "BC001"  # raised by boardcast_persist_batch when the seq fence fails
_FENCED_SQLSTATE = "BC002"  # raised by boardcast_persist_batch when the epoch fence fails


_JSON = msgspec.json.Encoder()
_OPTIONS = msgspec.json.Decoder(list[FieldOption])
_FIELD_VALUES = msgspec.json.Decoder(dict[uuid.UUID, str | int | float | bool])
_LOAD_WORK_MEM = "32MB"


class _EventRow(msgspec.Struct, array_like=False):
    """One event as the persist function reads it (``body`` is already JSON)."""

    seq: int
    kind: str
    body: msgspec.Raw
    author: uuid.UUID
    rid: str | None
    ts_ms: int
    fp: int | None


def _rows(items: list[Any]) -> str:
    # The protocol's JSON encoding of each entity is the row the persist function reads.
    return _JSON.encode(items).decode() if items else "[]"


def _deleted(batch: Batch) -> str:
    gone = {
        "columns": batch.deleted_columns,
        "cards": batch.deleted_cards,
        "labels": batch.deleted_labels,
        "fields": batch.deleted_fields,
        "checklists": batch.deleted_checklists,
        "items": batch.deleted_items,
        "comments": batch.deleted_comments,
        "attachments": batch.deleted_attachments,
    }
    return _JSON.encode({k: v for k, v in gone.items() if v}).decode()


def _ms(ts: datetime.datetime) -> int:
    return round(ts.timestamp() * 1000)


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
        """The whole board (every table) and its recent request ids, in one snapshot."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            b = await conn.fetchrow(
                """SELECT id, title, description, owner_id, seq, epoch, allow_wip_overflow
                   FROM boards WHERE id = $1""",
                board_id,
            )
            if b is None:
                return None
            # The sorts below hold a large board's rows (10,000 cards: 5 MB) in memory rather
            # than spilling them to temporary files past the default work_mem of 4 MB.
            await conn.execute(f"SET LOCAL work_mem = '{_LOAD_WORK_MEM}'")
            cols = await conn.fetch(
                """SELECT id, title, rank, colour, wip_limit, archived FROM columns
                   WHERE board_id = $1 ORDER BY rank""",
                board_id,
            )
            cards = await conn.fetch(
                """SELECT id, column_id, title, description, rank, start_ms, due_ms, done, assignees,
                          label_ids, cover_id, archived, fields::text AS fields
                   FROM cards WHERE board_id = $1 ORDER BY column_id, rank""",
                board_id,
            )
            labels = await conn.fetch(
                "SELECT id, name, colour FROM labels WHERE board_id = $1 ORDER BY name, id", board_id
            )
            fields = await conn.fetch(
                """SELECT id, name, kind, options::text AS options, rank FROM custom_fields
                   WHERE board_id = $1 ORDER BY rank""",
                board_id,
            )
            checklists = await conn.fetch(
                "SELECT id, card_id, title, rank FROM checklists WHERE board_id = $1 ORDER BY card_id, rank",
                board_id,
            )
            items = await conn.fetch(
                """SELECT id, checklist_id, card_id, text, rank, done, assignee_id, due_ms
                   FROM checklist_items WHERE board_id = $1 ORDER BY checklist_id, rank""",
                board_id,
            )
            comments = await conn.fetch(
                """SELECT id, card_id, author_id, body, mentions, created_at, edited_at FROM comments
                   WHERE board_id = $1 ORDER BY created_at, id""",
                board_id,
            )
            attachments = await conn.fetch(
                """SELECT id, card_id, name, content_type, size, blob_key, thumb_key, created_by,
                          created_at
                   FROM attachments WHERE board_id = $1 ORDER BY created_at, id""",
                board_id,
            )
            members = await conn.fetch(
                """SELECT u.id, u.name FROM board_members m JOIN users u ON u.id = m.user_id
                   WHERE m.board_id = $1""",
                board_id,
            )
            reqs = await conn.fetch(
                """SELECT author, request_id, seq, fingerprint FROM board_events
                   WHERE board_id = $1 AND seq > $2 AND request_id IS NOT NULL
                   ORDER BY seq""",
                board_id,
                max(0, b["seq"] - recent),
            )
        # One object per id: a single reference (a card's column, an item's checklist and card,
        # a comment's card and author, a checklist's card) shares the object of the id it names
        # instead of holding a copy that asyncpg decoded: 55,000 fewer objects for the garbage
        # collector to walk on a board of 10,000 cards, and about 4 MB. (Lists and field
        # values are left as decoded: rebuilding them cost more activation time than it saved.)
        same: dict[uuid.UUID, uuid.UUID] = {}
        for rows in (cols, labels, fields, cards, checklists, members):
            for r in rows:
                same[r[0]] = r[0]
        g = same.get
        return LoadedBoard(
            id=b["id"],
            title=b["title"],
            description=b["description"],
            owner_id=g(b["owner_id"], b["owner_id"]),
            seq=b["seq"],
            epoch=b["epoch"],
            allow_wip_overflow=b["allow_wip_overflow"],
            columns=[Column(**dict(r)) for r in cols],
            # Built from the record's values by position (see the SELECT): a large board has
            # 10,000 cards, and lookups by name cost as much as the Struct itself.
            cards=[
                Card(
                    id=r[0],
                    column_id=g(r[1], r[1]),
                    title=r[2],
                    description=r[3],
                    rank=r[4],
                    start_ms=r[5],
                    due_ms=r[6],
                    done=r[7],
                    assignees=r[8],
                    label_ids=r[9],
                    cover_id=r[10],
                    archived=r[11],
                    # most cards hold no value: no decoder call for them
                    fields={} if r[12] == "{}" else _FIELD_VALUES.decode(r[12]),
                )
                for r in cards
            ],
            labels=[Label(**dict(r)) for r in labels],
            fields=[
                CustomField(
                    id=r["id"],
                    name=r["name"],
                    kind=r["kind"],
                    options=_OPTIONS.decode(r["options"]),
                    rank=r["rank"],
                )
                for r in fields
            ],
            checklists=[Checklist(id=r[0], card_id=g(r[1], r[1]), title=r[2], rank=r[3]) for r in checklists],
            # By position too: a dict per row and the keyword unpacking cost more than the
            # Struct itself (14,000 items on a large board).
            items=[
                ChecklistItem(
                    id=r[0],
                    checklist_id=g(r[1], r[1]),
                    card_id=g(r[2], r[2]),
                    text=r[3],
                    rank=r[4],
                    done=r[5],
                    assignee_id=r[6] if r[6] is None else g(r[6], r[6]),
                    due_ms=r[7],
                )
                for r in items
            ],
            comments=[
                Comment(
                    id=r[0],
                    card_id=g(r[1], r[1]),
                    author_id=g(r[2], r[2]),
                    body=r[3],
                    mentions=r[4],
                    created_at_ms=_ms(r[5]),
                    edited_at_ms=None if r[6] is None else _ms(r[6]),
                )
                for r in comments
            ],
            attachments=[
                Attachment(
                    id=r["id"],
                    card_id=r["card_id"],
                    name=r["name"],
                    content_type=r["content_type"],
                    size=r["size"],
                    blob_key=r["blob_key"],
                    thumb_key=r["thumb_key"],
                    created_by=r["created_by"],
                    created_at_ms=_ms(r["created_at"]),
                )
                for r in attachments
            ],
            members={r["id"]: r["name"] for r in members},
            recent_requests=[(r["author"], r["request_id"], r["seq"], r["fingerprint"]) for r in reqs],
        )

    async def member_names(self, board_id: uuid.UUID) -> dict[uuid.UUID, str]:
        """The board's members by user id, with their names (for assignees and mentions)."""
        rows = await self._pool.fetch(
            """SELECT u.id, u.name FROM board_members m JOIN users u ON u.id = m.user_id
               WHERE m.board_id = $1""",
            board_id,
        )
        return {r["id"]: r["name"] for r in rows}

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
        statement (a function call, see migration 0005), so one round trip and no
        BEGIN/COMMIT. Each table's changed rows travel as one JSON array, its deletions as one
        list. Raises FencedOut if another activation took a newer epoch, StaleBoard if the seq
        moved (or the board is gone)."""
        events = [
            _EventRow(
                seq=e.seq,
                kind=e.kind,
                body=msgspec.Raw(e.body.encode()),
                author=e.author,
                rid=e.request_id,
                ts_ms=e.ts_ms,
                fp=e.fingerprint,
            )
            for e in batch.events
        ]
        settings = {
            "title": batch.title,
            "description": batch.description,
            "allow_wip_overflow": batch.allow_wip_overflow,
        }
        try:
            await self._pool.execute(
                """SELECT boardcast_persist_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                       $13, $14, $15, $16)""",
                batch.board_id,
                batch.base_seq,
                batch.new_seq,
                batch.epoch,
                batch.commit_token,
                _JSON.encode(settings).decode(),
                _deleted(batch),
                _rows(batch.columns),
                _rows(batch.cards),
                _rows(batch.labels),
                _rows(batch.fields),
                _rows(batch.checklists),
                _rows(batch.items),
                _rows(batch.comments),
                _rows(batch.attachments),
                _rows(events),
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
