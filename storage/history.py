"""History reads: the event log as a feed, stored snapshots and the per-card event index.

Nothing here is on the board actor's commit path: the history reader (actors/history.py)
writes snapshots and index rows after the fact, as it replays.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

SNAPSHOT_FORMAT = 1  # of board_snapshots.body: a protocol.model.BoardSnapshot in JSON


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One row of the event log, with its author's name (None if the user is gone)."""

    seq: int
    kind: str
    body: str  # the event's JSON encoding
    author: uuid.UUID
    author_name: str | None
    created_at: dt.datetime
    request_id: str | None


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    seq: int
    body: str
    event_at: dt.datetime


@dataclass(frozen=True, slots=True)
class BoardClock:
    """Where a board's log stands: its seq now and when the board was created."""

    seq: int
    created_at: dt.datetime


_EVENT_COLUMNS = """e.seq, e.kind, e.body::text AS body, e.author, u.name AS author_name,
                    e.created_at, e.request_id"""


def _logged(rows: Sequence[asyncpg.Record]) -> list[LoggedEvent]:
    return [
        LoggedEvent(
            seq=r["seq"],
            kind=r["kind"],
            body=r["body"],
            author=r["author"],
            author_name=r["author_name"],
            created_at=r["created_at"],
            request_id=r["request_id"],
        )
        for r in rows
    ]


class HistoryRepo:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def clock(self, board_id: uuid.UUID) -> BoardClock | None:
        row = await self._pool.fetchrow("SELECT seq, created_at FROM boards WHERE id = $1", board_id)
        return None if row is None else BoardClock(row["seq"], row["created_at"])

    async def feed(
        self, board_id: uuid.UUID, *, below: int | None, above: int | None, limit: int, newest_first: bool
    ) -> list[LoggedEvent]:
        """A page of the board's log: seqs strictly between ``above`` and ``below`` (either
        open), newest or oldest first. A range scan of the log's primary key."""
        order = "DESC" if newest_first else "ASC"
        rows = await self._pool.fetch(
            f"""SELECT {_EVENT_COLUMNS}
                FROM board_events e LEFT JOIN users u ON u.id = e.author
                WHERE e.board_id = $1 AND e.seq > $2 AND e.seq < $3
                ORDER BY e.seq {order} LIMIT $4""",
            board_id,
            -1 if above is None else above,
            2**62 if below is None else below,
            limit,
        )
        return _logged(rows)

    async def card_feed(
        self,
        board_id: uuid.UUID,
        card_id: uuid.UUID,
        *,
        below: int | None,
        above: int | None,
        limit: int,
        newest_first: bool,
    ) -> list[LoggedEvent]:
        """Like :meth:`feed`, for the events that changed one card (as indexed so far)."""
        order = "DESC" if newest_first else "ASC"
        rows = await self._pool.fetch(
            f"""SELECT {_EVENT_COLUMNS}
                FROM card_events ce
                JOIN board_events e ON e.board_id = ce.board_id AND e.seq = ce.seq
                LEFT JOIN users u ON u.id = e.author
                WHERE ce.board_id = $1 AND ce.card_id = $2 AND ce.seq > $3 AND ce.seq < $4
                ORDER BY ce.seq {order} LIMIT $5""",
            board_id,
            card_id,
            -1 if above is None else above,
            2**62 if below is None else below,
            limit,
        )
        return _logged(rows)

    async def events(self, board_id: uuid.UUID, above: int, upto: int, limit: int) -> list[LoggedEvent]:
        """Events with ``above < seq <= upto`` in order, at most ``limit`` (no author names:
        replay does not need them)."""
        rows = await self._pool.fetch(
            """SELECT seq, kind, body::text AS body, author, NULL::text AS author_name, created_at,
                      request_id
               FROM board_events WHERE board_id = $1 AND seq > $2 AND seq <= $3
               ORDER BY seq LIMIT $4""",
            board_id,
            above,
            upto,
            limit,
        )
        return _logged(rows)

    async def snapshot_at_or_below(self, board_id: uuid.UUID, seq: int) -> StoredSnapshot | None:
        row = await self._pool.fetchrow(
            """SELECT seq, body::text AS body, event_at FROM board_snapshots
               WHERE board_id = $1 AND seq <= $2 AND format = $3 ORDER BY seq DESC LIMIT 1""",
            board_id,
            seq,
            SNAPSHOT_FORMAT,
        )
        return None if row is None else StoredSnapshot(row["seq"], row["body"], row["event_at"])

    async def snapshot_seqs(self, board_id: uuid.UUID, lo: int = 0, hi: int = 2**62) -> list[int]:
        """Seqs of the stored snapshots from ``lo`` to ``hi``, in order."""
        rows = await self._pool.fetch(
            """SELECT seq FROM board_snapshots
               WHERE board_id = $1 AND seq >= $2 AND seq <= $3 AND format = $4 ORDER BY seq""",
            board_id,
            lo,
            hi,
            SNAPSHOT_FORMAT,
        )
        return [r["seq"] for r in rows]

    async def indexed_seq(self, board_id: uuid.UUID) -> int:
        found = await self._pool.fetchval(
            "SELECT indexed_seq FROM history_progress WHERE board_id = $1", board_id
        )
        return 0 if found is None else int(found)

    async def record(
        self,
        board_id: uuid.UUID,
        snapshots: Sequence[StoredSnapshot],
        touches: Sequence[tuple[uuid.UUID, int]],
        indexed_seq: int | None,
    ) -> None:
        """Store what a replay learned, in one transaction: snapshots, which cards each event
        changed, and (if given) how far the card index now reaches. Two readers replaying the
        same stretch at once write the same rows; the second's are ignored."""
        async with self._pool.acquire() as conn, conn.transaction():
            if snapshots:
                await conn.executemany(
                    """INSERT INTO board_snapshots (board_id, seq, format, body, event_at)
                       VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING""",
                    [(board_id, s.seq, SNAPSHOT_FORMAT, s.body, s.event_at) for s in snapshots],
                )
            if touches:
                await conn.execute(
                    """INSERT INTO card_events (board_id, card_id, seq)
                       SELECT $1, u.card_id, u.seq FROM unnest($2::uuid[], $3::bigint[]) AS u (card_id, seq)
                       ON CONFLICT DO NOTHING""",
                    board_id,
                    [t[0] for t in touches],
                    [t[1] for t in touches],
                )
            if indexed_seq is not None:
                await conn.execute(
                    """INSERT INTO history_progress (board_id, indexed_seq) VALUES ($1, $2)
                       ON CONFLICT (board_id) DO UPDATE
                       SET indexed_seq = GREATEST(history_progress.indexed_seq, EXCLUDED.indexed_seq)""",
                    board_id,
                    indexed_seq,
                )

    async def card_seqs(self, board_id: uuid.UUID, card_id: uuid.UUID, above: int, limit: int) -> list[int]:
        """Seqs of the events that changed the card, after ``above``, oldest first."""
        rows = await self._pool.fetch(
            """SELECT seq FROM card_events WHERE board_id = $1 AND card_id = $2 AND seq > $3
               ORDER BY seq LIMIT $4""",
            board_id,
            card_id,
            above,
            limit,
        )
        return [r["seq"] for r in rows]

    async def seq_at(self, board_id: uuid.UUID, at: dt.datetime) -> int | None:
        """The seq of the board's last event at or before ``at`` (0 if none yet; None if the
        board did not exist then). Bounded to one stretch between snapshots: the first snapshot
        whose event is later than ``at`` caps the scan."""
        async with self._pool.acquire() as conn:
            created = await conn.fetchval("SELECT created_at FROM boards WHERE id = $1", board_id)
            if created is None or at < created:
                return None
            cap = await conn.fetchval(
                """SELECT min(seq) FROM board_snapshots WHERE board_id = $1 AND event_at > $2""",
                board_id,
                at,
            )
            seq = await conn.fetchval(
                """SELECT seq FROM board_events
                   WHERE board_id = $1 AND seq < $2 AND created_at <= $3
                   ORDER BY seq DESC LIMIT 1""",
                board_id,
                2**62 if cap is None else cap,
                at,
            )
        return 0 if seq is None else int(seq)
