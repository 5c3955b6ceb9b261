"""Webhooks and their delivery attempts: the only SQL of outgoing webhooks.

Delivery state lives in the webhook's row (``cursor_seq``, the failure count, the next
attempt's time and a lease), so any number of processes on one database can deliver: each
claims due webhooks with ``FOR UPDATE SKIP LOCKED`` and a lease, and every write of delivery
state is conditional on still holding that lease (see jobs/webhooks.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import asyncpg

MAX_WEBHOOKS_PER_BOARD = 20

_COLUMNS = """id, board_id, url, kinds, description, active, created_at, updated_at, cursor_seq,
    consecutive_failures, next_attempt_at, last_error, disabled_at, disabled_reason"""


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """A webhook as its admins see it (never its secret)."""

    id: uuid.UUID
    board_id: uuid.UUID
    url: str
    kinds: list[str] | None  # None: every kind
    description: str
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    cursor_seq: int
    consecutive_failures: int
    next_attempt_at: dt.datetime
    last_error: str | None
    disabled_at: dt.datetime | None
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class ClaimedWebhook:
    """A webhook this process holds the lease of, with what delivering needs."""

    id: uuid.UUID
    board_id: uuid.UUID
    url: str
    kinds: frozenset[str] | None
    secret: str = field(repr=False)  # kept out of tracebacks and logs
    cursor_seq: int
    consecutive_failures: int
    active: bool
    notify_pending: bool
    disabled_at: dt.datetime | None
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    kind: str
    body: str  # the event's JSON, as the event log holds it
    author: uuid.UUID
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt, as recorded."""

    id: int
    seq: int
    kind: str
    attempt: int
    outcome: str  # delivered | failed | refused
    status: int | None
    error: str | None
    duration_ms: float
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    held: bool  # the lease was still ours (else nothing was written)
    disabled: bool
    failures: int
    disabled_at: dt.datetime | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Backlog:
    behind: int  # active webhooks with events still to deliver
    events_behind: int  # events of their boards after their cursors
    disabled: int


class TooManyWebhooks(Exception):
    pass


def _record(row: asyncpg.Record) -> WebhookRecord:
    return WebhookRecord(
        id=row["id"],
        board_id=row["board_id"],
        url=row["url"],
        kinds=None if row["kinds"] is None else list(row["kinds"]),
        description=row["description"],
        active=row["active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        cursor_seq=row["cursor_seq"],
        consecutive_failures=row["consecutive_failures"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
    )


class WebhookRepo:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ management

    async def create(
        self,
        board_id: uuid.UUID,
        url: str,
        kinds: list[str] | None,
        description: str,
        active: bool,
        secret: str,
        created_by: uuid.UUID,
    ) -> WebhookRecord | None:
        """A new webhook that starts after the board's current seq (None: no such board).
        Raises TooManyWebhooks past :data:`MAX_WEBHOOKS_PER_BOARD`."""
        async with self._pool.acquire() as conn, conn.transaction():
            # The board row lock serialises creations on one board, so the count holds.
            seq = await conn.fetchval("SELECT seq FROM boards WHERE id = $1 FOR UPDATE", board_id)
            if seq is None:
                return None
            count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE board_id = $1", board_id)
            if count >= MAX_WEBHOOKS_PER_BOARD:
                raise TooManyWebhooks()
            row = await conn.fetchrow(
                f"""INSERT INTO webhooks (id, board_id, url, kinds, description, active, secret,
                                          created_by, cursor_seq)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}""",
                uuid.uuid4(),
                board_id,
                url,
                kinds,
                description,
                active,
                secret,
                created_by,
                seq,
            )
        return _record(row)

    async def for_board(self, board_id: uuid.UUID) -> list[WebhookRecord]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM webhooks WHERE board_id = $1 ORDER BY created_at, id", board_id
        )
        return [_record(r) for r in rows]

    async def get(self, board_id: uuid.UUID, webhook_id: uuid.UUID) -> WebhookRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM webhooks WHERE board_id = $1 AND id = $2", board_id, webhook_id
        )
        return None if row is None else _record(row)

    async def update(
        self,
        board_id: uuid.UUID,
        webhook_id: uuid.UUID,
        *,
        url: str | None = None,
        kinds: list[str] | None = None,
        all_kinds: bool = False,
        description: str | None = None,
        active: bool | None = None,
    ) -> WebhookRecord | None:
        """Change what is given. Enabling a webhook that was disabled starts it afresh at its
        cursor: no failures counted, due at once."""
        row = await self._pool.fetchrow(
            f"""UPDATE webhooks SET
                    url = coalesce($3, url),
                    kinds = CASE WHEN $5 THEN NULL ELSE coalesce($4, kinds) END,
                    description = coalesce($6, description),
                    active = coalesce($7, active),
                    consecutive_failures = CASE WHEN $7 AND NOT active THEN 0 ELSE consecutive_failures END,
                    failing_since = CASE WHEN $7 AND NOT active THEN NULL ELSE failing_since END,
                    next_attempt_at = CASE WHEN $7 AND NOT active THEN now() ELSE next_attempt_at END,
                    disabled_at = CASE WHEN $7 THEN NULL WHEN $7 = false AND active THEN now()
                                       ELSE disabled_at END,
                    disabled_reason = CASE WHEN $7 THEN NULL WHEN $7 = false AND active THEN 'by an admin'
                                           ELSE disabled_reason END,
                    notify_pending = CASE WHEN $7 THEN false ELSE notify_pending END,
                    updated_at = now()
                WHERE board_id = $1 AND id = $2
                RETURNING {_COLUMNS}""",
            board_id,
            webhook_id,
            url,
            kinds,
            all_kinds,
            description,
            active,
        )
        return None if row is None else _record(row)

    async def delete(self, board_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
        done: str = await self._pool.execute(
            "DELETE FROM webhooks WHERE board_id = $1 AND id = $2", board_id, webhook_id
        )
        return done.endswith(" 1")

    async def attempts(self, webhook_id: uuid.UUID, before_id: int | None, limit: int) -> list[Attempt]:
        """Attempts newest first, those with an id below ``before_id`` when given."""
        rows = await self._pool.fetch(
            """SELECT id, seq, kind, attempt, outcome, status, error, duration_ms, created_at
               FROM webhook_deliveries
               WHERE webhook_id = $1 AND ($2::bigint IS NULL OR id < $2)
               ORDER BY id DESC LIMIT $3""",
            webhook_id,
            before_id,
            limit,
        )
        return [Attempt(**dict(r)) for r in rows]

    async def backlog(self) -> Backlog:
        row = await self._pool.fetchrow(
            """SELECT count(*) FILTER (WHERE w.active AND b.seq > w.cursor_seq) AS behind,
                      coalesce(sum(b.seq - w.cursor_seq) FILTER (WHERE w.active AND b.seq > w.cursor_seq), 0)
                          AS events_behind,
                      count(*) FILTER (WHERE NOT w.active) AS disabled
               FROM webhooks w JOIN boards b ON b.id = w.board_id"""
        )
        return Backlog(int(row["behind"]), int(row["events_behind"]), int(row["disabled"]))

    # ------------------------------------------------------------------ delivery

    async def claim(self, owner: uuid.UUID, lease_s: float, limit: int) -> list[ClaimedWebhook]:
        """Lease up to ``limit`` webhooks that have work: events after their cursor and an
        attempt due, or admins still to be told that they were disabled. Rows another process
        holds (a live lease, or locked by its claim right now) are skipped, not waited for."""
        rows = await self._pool.fetch(
            """WITH due AS (
                   SELECT w.id FROM webhooks w JOIN boards b ON b.id = w.board_id
                   WHERE (w.lease_until IS NULL OR w.lease_until < now())
                     AND ((w.active AND w.next_attempt_at <= now() AND b.seq > w.cursor_seq)
                          OR w.notify_pending)
                   ORDER BY w.next_attempt_at
                   LIMIT $3
                   FOR UPDATE OF w SKIP LOCKED
               )
               UPDATE webhooks w SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
               FROM due WHERE w.id = due.id
               RETURNING w.id, w.board_id, w.url, w.kinds, w.secret, w.cursor_seq,
                         w.consecutive_failures, w.active, w.notify_pending, w.disabled_at,
                         w.disabled_reason""",
            owner,
            lease_s,
            limit,
        )
        return [
            ClaimedWebhook(
                id=r["id"],
                board_id=r["board_id"],
                url=r["url"],
                kinds=None if r["kinds"] is None else frozenset(r["kinds"]),
                secret=r["secret"],
                cursor_seq=r["cursor_seq"],
                consecutive_failures=r["consecutive_failures"],
                active=r["active"],
                notify_pending=r["notify_pending"],
                disabled_at=r["disabled_at"],
                disabled_reason=r["disabled_reason"],
            )
            for r in rows
        ]

    async def events_after(self, board_id: uuid.UUID, seq: int, limit: int) -> list[LoggedEvent]:
        rows = await self._pool.fetch(
            """SELECT seq, kind, body::text AS body, author,
                      (extract(epoch FROM created_at) * 1000)::bigint AS ts_ms
               FROM board_events WHERE board_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            board_id,
            seq,
            limit,
        )
        return [LoggedEvent(**dict(r)) for r in rows]

    async def skip_to(self, webhook_id: uuid.UUID, owner: uuid.UUID, seq: int, lease_s: float) -> bool:
        """Move the cursor over events the webhook does not take; renews the lease."""
        done: str = await self._pool.execute(
            """UPDATE webhooks SET cursor_seq = greatest(cursor_seq, $3),
                                   lease_until = now() + make_interval(secs => $4)
               WHERE id = $1 AND lease_owner = $2""",
            webhook_id,
            owner,
            seq,
            lease_s,
        )
        return done.endswith(" 1")

    async def delivered(
        self,
        webhook_id: uuid.UUID,
        owner: uuid.UUID,
        event: LoggedEvent,
        attempt: int,
        status: int,
        duration_ms: float,
        lease_s: float,
    ) -> bool:
        """Record a successful attempt and move the cursor to its event, in one statement;
        False (and nothing written) if the lease is no longer ours."""
        held = await self._pool.fetchval(
            """WITH u AS (
                   UPDATE webhooks SET cursor_seq = greatest(cursor_seq, $3), consecutive_failures = 0,
                                       failing_since = NULL, last_error = NULL,
                                       lease_until = now() + make_interval(secs => $7)
                   WHERE id = $1 AND lease_owner = $2
                   RETURNING id
               ), d AS (
                   INSERT INTO webhook_deliveries (webhook_id, seq, kind, attempt, outcome, status,
                                                   duration_ms)
                   SELECT id, $3, $4, $5, 'delivered', $6, $8 FROM u
               )
               SELECT count(*) FROM u""",
            webhook_id,
            owner,
            event.seq,
            event.kind,
            attempt,
            status,
            lease_s,
            duration_ms,
        )
        return bool(held)

    async def failed(
        self,
        webhook_id: uuid.UUID,
        owner: uuid.UUID,
        event: LoggedEvent,
        attempt: int,
        outcome: str,
        status: int | None,
        error: str,
        duration_ms: float,
        retry_in_s: float,
        max_failures: int,
        max_failing_s: float,
    ) -> FailureOutcome:
        """Record a failed attempt; the next one is due in ``retry_in_s``. The webhook is
        disabled (and its admins still to be told) once it has failed ``max_failures`` times
        in a row or has not succeeded for ``max_failing_s``; judged by the database's clock,
        the one clock every process shares."""
        row = await self._pool.fetchrow(
            """WITH x AS (
                   SELECT id, (consecutive_failures + 1 >= $10
                               OR now() - coalesce(failing_since, now()) >= make_interval(secs => $11))
                              AS disable
                   FROM webhooks WHERE id = $1 AND lease_owner = $2
               ), u AS (
                   UPDATE webhooks w SET
                       consecutive_failures = w.consecutive_failures + 1,
                       failing_since = coalesce(w.failing_since, now()),
                       last_error = $7,
                       next_attempt_at = now() + make_interval(secs => $9),
                       active = w.active AND NOT x.disable,
                       disabled_at = CASE WHEN x.disable THEN now() ELSE w.disabled_at END,
                       disabled_reason = CASE
                           WHEN NOT x.disable THEN w.disabled_reason
                           WHEN w.consecutive_failures + 1 >= $10
                           THEN (w.consecutive_failures + 1)::text || ' consecutive failed deliveries'
                           ELSE 'no successful delivery for ' || $11::text || ' s ('
                                || (w.consecutive_failures + 1)::text || ' failed attempts)' END,
                       notify_pending = w.notify_pending OR x.disable,
                       updated_at = CASE WHEN x.disable THEN now() ELSE w.updated_at END
                   FROM x WHERE w.id = x.id
                   RETURNING w.id, x.disable AS disabled, w.consecutive_failures, w.disabled_at,
                             w.disabled_reason
               ), d AS (
                   INSERT INTO webhook_deliveries (webhook_id, seq, kind, attempt, outcome, status,
                                                   error, duration_ms)
                   SELECT id, $3, $4, $5, $6, $12, $7, $8 FROM u
               )
               SELECT * FROM u""",
            webhook_id,
            owner,
            event.seq,
            event.kind,
            attempt,
            outcome,
            error,
            duration_ms,
            retry_in_s,
            max_failures,
            max_failing_s,
            status,
        )
        if row is None:
            return FailureOutcome(held=False, disabled=False, failures=0, disabled_at=None, reason=None)
        return FailureOutcome(
            held=True,
            disabled=row["disabled"],
            failures=row["consecutive_failures"],
            disabled_at=row["disabled_at"],
            reason=row["disabled_reason"],
        )

    async def notified(self, webhook_id: uuid.UUID, owner: uuid.UUID) -> None:
        await self._pool.execute(
            "UPDATE webhooks SET notify_pending = false WHERE id = $1 AND lease_owner = $2", webhook_id, owner
        )

    async def release(self, webhook_ids: list[uuid.UUID], owner: uuid.UUID) -> None:
        """Give the leases back, so that another process need not wait for them to expire."""
        await self._pool.execute(
            """UPDATE webhooks SET lease_owner = NULL, lease_until = NULL
               WHERE id = ANY ($1::uuid[]) AND lease_owner = $2""",
            webhook_ids,
            owner,
        )
