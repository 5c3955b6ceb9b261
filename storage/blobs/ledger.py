"""What PostgreSQL knows about blobs: which are referenced, which were uploaded and not yet
committed, and which a commit dropped (migration 0006).

- ``blob_uploads``: a row is written before a blob is stored and removed once the row that
  refers to it has committed. A row that stays (the process died between upload and commit, or
  the commit was refused) marks an orphan the sweeper removes after a grace period.
- ``blob_trash``: filled by a trigger on ``attachments`` in the very transaction that deletes
  the row (an ``attachment.delete``, a card, column or board deletion cascading), so a blob is
  trashed exactly when, and only after, the commit that drops it; the trigger also notifies
  ``boardcast_blob_trash``, which PostgreSQL delivers at commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

from protocol.model import Attachment

TRASH_CHANNEL = "boardcast_blob_trash"

# Every (table, column) whose rows refer to blobs. Another kind of row that keeps blobs (the
# artifacts of generation jobs) adds its columns here, and a trash trigger on its table as
# migration 0006 has on ``attachments``; the store, the ledger and the sweeper stay as they are.
REFERENCES = (("attachments", "blob_key"), ("attachments", "thumb_key"))
_REFERENCED = " UNION ".join(
    f"SELECT {column} AS key FROM {table} WHERE {column} = ANY($1::text[])" for table, column in REFERENCES
)


class BlobLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_uploads(self, keys: Sequence[str], board_id: uuid.UUID | None) -> None:
        await self._pool.execute(
            "INSERT INTO blob_uploads (key, board_id) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
            list(keys),
            board_id,
        )

    async def forget_uploads(self, keys: Sequence[str]) -> None:
        await self._pool.execute("DELETE FROM blob_uploads WHERE key = ANY($1::text[])", list(keys))

    async def stale_uploads(self, older_than_s: float, limit: int) -> list[str]:
        rows = await self._pool.fetch(
            """SELECT key FROM blob_uploads
               WHERE created_at < now() - make_interval(secs => $1)
               ORDER BY created_at LIMIT $2""",
            older_than_s,
            limit,
        )
        return [r["key"] for r in rows]

    async def trashed(self, limit: int) -> list[str]:
        rows = await self._pool.fetch("SELECT key FROM blob_trash ORDER BY trashed_at LIMIT $1", limit)
        return [r["key"] for r in rows]

    async def drop_trash(self, keys: Sequence[str]) -> None:
        await self._pool.execute("DELETE FROM blob_trash WHERE key = ANY($1::text[])", list(keys))

    async def referenced(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that a committed row refers to: never to be deleted."""
        rows = await self._pool.fetch(_REFERENCED, list(keys))
        return {r["key"] for r in rows}

    # ------------------------------------------------------------------ committed attachments
    # Downloads read the committed row by its ids (one indexed lookup) instead of asking the
    # board for its whole snapshot: a board of 10,000 cards shows many thumbnails.

    async def card_exists(self, board_id: uuid.UUID, card_id: uuid.UUID) -> bool:
        found = await self._pool.fetchval(
            "SELECT true FROM cards WHERE id = $1 AND board_id = $2", card_id, board_id
        )
        return bool(found)

    async def attachments(
        self, board_id: uuid.UUID, card_id: uuid.UUID, attachment_id: uuid.UUID | None = None
    ) -> list[Attachment]:
        """The card's committed attachments, oldest first (only ``attachment_id``, if given)."""
        rows = await self._pool.fetch(
            """SELECT id, card_id, name, content_type, size, blob_key, thumb_key, created_by, created_at
               FROM attachments
               WHERE board_id = $1 AND card_id = $2 AND ($3::uuid IS NULL OR id = $3)
               ORDER BY created_at, id""",
            board_id,
            card_id,
            attachment_id,
        )
        return [
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
            for r in rows
        ]


def _ms(ts: dt.datetime) -> int:
    return int(ts.timestamp() * 1000)
