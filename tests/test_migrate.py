"""Migrations carry a checksum: an applied migration whose file changed stops `boardcast
migrate` and `boardcast serve` with a clear message; a database from before checksums gets
them recorded and upgrades cleanly; production `migrate` needs only DATABASE_URL."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from storage import MigrationError, migrate
from storage.migrate import Migration, available
from tests.services import postgres_database
from tests.test_newcomer import boardcast_cmd

ONE = Migration(1, "first", "CREATE TABLE first_table (id integer PRIMARY KEY);")
TWO = Migration(2, "second", "CREATE TABLE second_table (id integer PRIMARY KEY);")


@pytest.fixture
def fresh_db(tmp_path: Path) -> Iterator[str]:
    with postgres_database() as url:
        yield url


async def recorded(conn: asyncpg.Connection) -> dict[int, str | None]:
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {r["version"]: r["checksum"] for r in rows}


async def test_each_applied_migration_records_the_checksum_of_its_file(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrate(conn)
        assert await recorded(conn) == {m.version: m.checksum for m in available()}
        assert all(len(m.checksum) == 64 for m in available())
    finally:
        await conn.close()


async def test_a_changed_applied_migration_stops_before_anything_else_is_applied(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await migrate(conn, [ONE]) == [1]
        edited = Migration(1, "first", ONE.sql + "\nCREATE INDEX ON first_table (id);")
        with pytest.raises(MigrationError) as exc:
            await migrate(conn, [edited, TWO])
        message = str(exc.value)
        assert "0001_first.sql" in message and "new, higher-numbered migration" in message
        assert ONE.checksum[:12] in message and edited.checksum[:12] in message
        # nothing was applied, and the lock was released
        assert set(await recorded(conn)) == {1}
        assert await conn.fetchval("SELECT to_regclass('second_table')") is None
        # the same text with CRLF line endings is the same migration
        crlf = Migration(1, "first", ONE.sql.replace("\n", "\r\n") + "\r\n")
        assert Migration(1, "first", ONE.sql + "\n").checksum == crlf.checksum
        assert await migrate(conn, [ONE, TWO]) == [2]
    finally:
        await conn.close()


async def test_a_database_from_before_checksums_gets_them_and_still_catches_changes(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        # the table exactly as earlier releases created it, with their rows
        await conn.execute(
            """CREATE TABLE schema_migrations (
                   version     integer PRIMARY KEY,
                   name        text NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now())"""
        )
        await conn.execute(ONE.sql)
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'first')")

        assert await migrate(conn, [ONE, TWO]) == [2]
        assert await recorded(conn) == {1: ONE.checksum, 2: TWO.checksum}
        assert await migrate(conn, [ONE, TWO]) == []
        with pytest.raises(MigrationError, match=r"0002_second\.sql"):
            await migrate(conn, [ONE, Migration(2, "second", "SELECT 1;")])
    finally:
        await conn.close()


async def test_a_version_this_release_does_not_know_is_not_an_error(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrate(conn, [ONE, TWO])
        assert await migrate(conn, [ONE]) == []  # an older release on a newer schema
    finally:
        await conn.close()


# ------------------------------------------------------------------ the command


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(BOARDCAST_ENV="production", **extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*boardcast_cmd(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def json_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines()]  # every line is JSON


async def test_production_migrate_needs_only_database_url_and_stops_on_a_changed_file(
    fresh_db, redis_url, tmp_path
):
    # no REDIS_URL, no BOARDCAST_SECRET: migrate needs neither
    env = production_env(DATABASE_URL=fresh_db)
    done = run(["migrate"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert any(line["event"] == "migrations_done" for line in json_lines(done.stderr))

    conn = await asyncpg.connect(fresh_db)
    try:  # as if 0001_core.sql had been edited after it was applied
        await conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1")
    finally:
        await conn.close()

    done = run(["migrate"], env, tmp_path)
    assert done.returncode == 1, done.stderr
    (refused,) = [line for line in json_lines(done.stderr) if line["event"] == "migration_refused"]
    assert "0001_core.sql" in str(refused["reason"]) and "000000000000" in str(refused["reason"])
    assert "Traceback" not in done.stderr

    # `serve` runs the same migrations at start, and stops the same way
    serve_env = production_env(
        DATABASE_URL=fresh_db,
        REDIS_URL=redis_url,
        BOARDCAST_SECRET="a-migration-test-secret-0123456789abcdef",
        BOARDCAST_HOST="127.0.0.1",
        BOARDCAST_PORT="0",
    )
    done = run(["serve"], serve_env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert any(
        line["event"] == "migration_refused" and "0001_core.sql" in str(line["reason"])
        for line in json_lines(done.stderr)
    ), done.stderr
    assert "Traceback" not in done.stderr
