"""Import jobs in PostgreSQL: what a background import does, its progress and its report.

The table is the job's whole truth (state, source document, progress, outcome), so the job
can be run by the server's own task today and by an arq worker later with no change here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class ImportRow:
    id: uuid.UUID
    owner_id: uuid.UUID
    kind: str
    state: str
    title: str | None
    done: int
    total: int
    board_id: uuid.UUID | None
    report: str | None  # JSON
    error: str | None
    attempts: int
    created_at: dt.datetime
    finished_at: dt.datetime | None
    files_key: str | None  # a zip import's files, in the blob store


@dataclass(frozen=True, slots=True)
class ClaimedImport:
    row: ImportRow
    source: str  # the document, JSON


_COLUMNS = """id, owner_id, kind, state, title, done, total, board_id, report::text AS report, error,
              attempts, created_at, finished_at, files_key"""


def _row(r: asyncpg.Record) -> ImportRow:
    return ImportRow(**{k: r[k] for k in ImportRow.__slots__})  # type: ignore[attr-defined]


class ImportRepo:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        owner_id: uuid.UUID,
        kind: str,
        source: str,
        title: str | None,
        files_key: str | None = None,
        job_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        job_id = job_id or uuid.uuid4()
        await self._pool.execute(
            """INSERT INTO import_jobs (id, owner_id, kind, state, title, source, files_key)
               VALUES ($1, $2, $3, 'queued', $4, $5, $6)""",
            job_id,
            owner_id,
            kind,
            title,
            source,
            files_key,
        )
        return job_id

    async def get(self, job_id: uuid.UUID) -> ImportRow | None:
        r = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM import_jobs WHERE id = $1", job_id)
        return None if r is None else _row(r)

    async def claim(self, job_id: uuid.UUID) -> ClaimedImport | None:
        """Take a queued job (None if someone else did, or it is not queued)."""
        r = await self._pool.fetchrow(
            f"""UPDATE import_jobs SET state = 'running', attempts = attempts + 1, updated_at = now()
                WHERE id = $1 AND state = 'queued'
                RETURNING {_COLUMNS}, source""",
            job_id,
        )
        return None if r is None else ClaimedImport(_row(r), r["source"])

    async def set_board(self, job_id: uuid.UUID, board_id: uuid.UUID) -> None:
        await self._pool.execute(
            "UPDATE import_jobs SET board_id = $2, updated_at = now() WHERE id = $1", job_id, board_id
        )

    async def progress(self, job_id: uuid.UUID, done: int, total: int) -> None:
        await self._pool.execute(
            "UPDATE import_jobs SET done = $2, total = $3, updated_at = now() WHERE id = $1",
            job_id,
            done,
            total,
        )

    async def finish(
        self, job_id: uuid.UUID, state: str, board_id: uuid.UUID | None, report: str | None, error: str | None
    ) -> None:
        """The job's outcome; its source document is dropped."""
        await self._pool.execute(
            """UPDATE import_jobs
               SET state = $2, board_id = $3, report = $4::jsonb, error = $5, source = NULL,
                      done = CASE WHEN $2 = 'succeeded' THEN total ELSE done END,
                      updated_at = now(), finished_at = now()
               WHERE id = $1""",
            job_id,
            state,
            board_id,
            report,
            error,
        )

    async def release(self, job_id: uuid.UUID) -> None:
        """A running job whose runner is stopping: queued again, from the start."""
        await self._pool.execute(
            """UPDATE import_jobs SET state = 'queued', board_id = NULL, done = 0, updated_at = now()
               WHERE id = $1 AND state = 'running'""",
            job_id,
        )

    async def queued(self) -> list[uuid.UUID]:
        rows = await self._pool.fetch("SELECT id FROM import_jobs WHERE state = 'queued' ORDER BY created_at")
        return [r["id"] for r in rows]

    async def requeue_stale(
        self, stale_s: float, max_attempts: int
    ) -> list[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID]]:
        """Running jobs nobody has touched for ``stale_s`` (their runner died): queued again,
        or failed after ``max_attempts``. Returns (job, its partial board, owner) for each; the
        caller deletes the partial boards."""
        rows = await self._pool.fetch(
            """UPDATE import_jobs
               SET state = CASE WHEN attempts >= $2 THEN 'failed' ELSE 'queued' END,
                   error = CASE WHEN attempts >= $2 THEN 'interrupted too many times' END,
                   finished_at = CASE WHEN attempts >= $2 THEN now() END,
                   board_id = NULL, done = 0, updated_at = now()
               FROM (SELECT id, board_id AS old_board FROM import_jobs
                     WHERE state = 'running' AND updated_at < now() - make_interval(secs => $1)
                     FOR UPDATE) stale
               WHERE import_jobs.id = stale.id
               RETURNING import_jobs.id, stale.old_board, import_jobs.owner_id""",
            stale_s,
            max_attempts,
        )
        return [(r["id"], r["old_board"], r["owner_id"]) for r in rows]
