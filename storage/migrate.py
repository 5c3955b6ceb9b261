"""Versioned SQL migrations, applied in order under an advisory lock.

Files are ``migrations/NNNN_name.sql``; each runs in its own transaction and is recorded in
``schema_migrations`` with the SHA-256 of its text. Two nodes starting at once serialise on
the advisory lock, so the second sees the first's work and applies nothing.

An applied migration is never run again, so editing one would change nothing in databases
that already have it while fresh databases get the new text: the two would drift apart
without a word. A file whose checksum differs from the one recorded therefore stops the
start (``MigrationError``) until it is restored; changes go in a new migration.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# An arbitrary constant shared by every Boardcast process: "the migration lock".
_LOCK_KEY = 0x626F617264636173  # "boardcas"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The database and the migration files disagree; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        # Line endings normalised: a checkout that turns LF into CRLF changes no migration.
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply every pending migration (by default the package's files); returns the versions
    applied by this call. Raises :class:`MigrationError`, applying nothing, when an applied
    migration's file has changed."""
    migrations = available() if migrations is None else migrations
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        recorded = await _recorded(conn, migrations)
        _check_unchanged(recorded, migrations)
        for mig in migrations:
            if mig.version in recorded:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            log.info("migration_applied", version=mig.version, name=mig.name)
            applied_now.append(mig.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def _recorded(conn: asyncpg.Connection, migrations: Sequence[Migration]) -> dict[int, str | None]:
    """version -> recorded checksum of every applied migration. A table from before checksums
    gets the column here, and its rows the checksums of the files as they are now: the files a
    running deployment was started with are the best record there is."""
    files = {m.version: m for m in migrations}
    async with conn.transaction():
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version     integer PRIMARY KEY,
                   name        text NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now(),
                   checksum    text)"""
        )
        await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        backfill = [
            (r["version"], files[r["version"]].checksum)
            for r in rows
            if r["checksum"] is None and r["version"] in files
        ]
        if backfill:
            await conn.executemany(
                "UPDATE schema_migrations SET checksum = $2 WHERE version = $1 AND checksum IS NULL", backfill
            )
            log.info("migration_checksums_recorded", versions=[v for v, _ in backfill])
    recorded: dict[int, str | None] = {r["version"]: r["checksum"] for r in rows}
    recorded.update(backfill)
    unknown = sorted(set(recorded) - set(files))
    if unknown:
        # A newer release ran them (a rollback, or a rolling upgrade's older node): its schema
        # is a superset this code does not need to understand, so this is not an error.
        log.warning("migrations_unknown_to_this_release", versions=unknown)
    return recorded


def _check_unchanged(recorded: dict[int, str | None], migrations: Sequence[Migration]) -> None:
    changed = [m for m in migrations if m.version in recorded and recorded[m.version] != m.checksum]
    if not changed:
        return
    lines = [
        f"{m.filename}: recorded sha256 {(recorded[m.version] or '')[:12]}…, file now {m.checksum[:12]}…"
        for m in changed
    ]
    raise MigrationError(
        "applied migration changed since it ran on this database "
        f"({'; '.join(lines)}). An applied migration is never re-run: restore the file as it "
        "was applied and put the change in a new, higher-numbered migration."
    )
