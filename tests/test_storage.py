"""Storage against a real PostgreSQL: migrations (recorded, idempotent, serialised by the
advisory lock) and the board repository's all-or-nothing group commit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from protocol.model import Card, Column
from storage import Batch, BoardRepo, FencedOut, MemberRepo, StaleBoard, StoredEvent, migrate
from storage.migrate import _LOCK_KEY, available
from tests.services import postgres_database

USER = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


@pytest.fixture
def fresh_db() -> Iterator[str]:
    """An empty database of its own, dropped afterwards."""
    with postgres_database() as url:
        yield url


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


# ------------------------------------------------------------------ migrations


def test_migrations_are_numbered_uniquely_and_in_order():
    migs = available()
    assert migs, "no migrations found"
    versions = [m.version for m in migs]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
    assert all(m.sql.strip() for m in migs)


async def test_migrate_applies_and_records_every_migration_once(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await tables(conn) == set()
        applied = await migrate(conn)
        assert applied == [m.version for m in available()]
        rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in available()]
        assert {"users", "boards", "board_members", "columns", "cards", "board_events"} <= await tables(conn)

        # a second run is a no-op: nothing applied, nothing re-recorded
        assert await migrate(conn) == []
        again = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        assert again == rows
        # and the lock was released: another session can take it at once
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY) is True
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def test_concurrent_migrations_serialise_on_the_advisory_lock(fresh_db):
    holder, a, b = [await asyncpg.connect(fresh_db) for _ in range(3)]
    try:
        # Hold the lock so both migrations are certainly waiting on it at the same time.
        await holder.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        runs = [asyncio.create_task(migrate(a)), asyncio.create_task(migrate(b))]
        waiting_sql = """SELECT count(*) FROM pg_locks
                         WHERE locktype = 'advisory' AND NOT granted AND database =
                               (SELECT oid FROM pg_database WHERE datname = current_database())"""
        async with asyncio.timeout(10):
            # waiting on Postgres itself, re-checked after each round trip
            while await holder.fetchval(waiting_sql) < 2:
                assert not any(r.done() for r in runs), [r.exception() for r in runs if r.done()]
        assert await tables(holder) == set()
        await holder.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)

        results = await asyncio.gather(*runs)
        everything = [m.version for m in available()]
        assert sorted(results, key=len) == [[], everything]
        counts = await holder.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
        assert {r["version"]: r["n"] for r in counts} == dict.fromkeys(everything, 1)
    finally:
        for conn in (holder, a, b):
            await conn.close()


async def test_two_migrations_started_together_both_succeed(fresh_db):
    a, b = [await asyncpg.connect(fresh_db) for _ in range(2)]
    try:
        results = await asyncio.gather(migrate(a), migrate(b))
        everything = [m.version for m in available()]
        assert sorted(results, key=len) == [[], everything]
        n = await a.fetchval("SELECT count(*) FROM schema_migrations")
        assert n == len(everything)
    finally:
        await a.close()
        await b.close()


# ------------------------------------------------------------------ the repository


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[tuple[BoardRepo, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        r = BoardRepo(pool)
        await r.ensure_user(USER, "Storage tester", None)
        yield r, pool
    finally:
        await pool.close()


def event(seq: int, kind: str = "board.updated", rid: str | None = None) -> StoredEvent:
    return StoredEvent(
        seq=seq,
        kind=kind,
        body=json.dumps({"kind": kind}),
        author=USER,
        request_id=rid,
        ts_ms=1,
        fingerprint=None if rid is None else -(2**63) + seq,  # the whole signed 64-bit range
    )


async def board_rows(pool: asyncpg.Pool, board_id: uuid.UUID) -> dict[str, Any]:
    """Everything stored about one board, for before/after comparisons."""
    async with pool.acquire() as conn:
        return {
            "board": dict(
                await conn.fetchrow("SELECT title, description, seq FROM boards WHERE id = $1", board_id)
            ),
            "columns": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT id, title, rank FROM columns WHERE board_id = $1 ORDER BY id", board_id
                )
            ],
            "cards": [
                tuple(r)
                for r in await conn.fetch(
                    """SELECT id, column_id, title, description, rank FROM cards
                       WHERE board_id = $1 ORDER BY id""",
                    board_id,
                )
            ],
            "events": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT seq, kind, request_id FROM board_events WHERE board_id = $1 ORDER BY seq",
                    board_id,
                )
            ],
        }


async def seeded(r: BoardRepo) -> tuple[uuid.UUID, Column, Card]:
    """A board at seq 2 with one column holding one card."""
    info = await r.create_board(USER, "Storage", "")
    col = Column(id=uuid.uuid4(), title="Todo", rank=100)
    card = Card(id=uuid.uuid4(), column_id=col.id, title="c", description="", rank=10)
    await r.persist(
        Batch(
            board_id=info.id,
            base_seq=0,
            new_seq=2,
            title="Storage",
            description="",
            epoch=0,
            columns=[col],
            cards=[card],
            events=[event(1, "column.created", "r1"), event(2, "card.created")],
        )
    )
    return info.id, col, card


async def test_persist_writes_rows_and_events_that_load_back(repo):
    r, _ = repo
    board_id, col, card = await seeded(r)
    loaded = await r.load_board(board_id, recent=100)
    assert loaded is not None
    assert loaded.seq == 2 and loaded.columns == [col] and loaded.cards == [card]
    assert loaded.recent_requests == [(USER, "r1", 1, -(2**63) + 1)]
    evs = await r.events_since(board_id, 0, 10)
    assert [(e.seq, e.kind, e.request_id) for e in evs] == [
        (1, "column.created", "r1"),
        (2, "card.created", None),
    ]
    assert [e.seq for e in await r.events_since(board_id, 1, 10)] == [2]


async def test_a_batch_whose_event_clashes_on_board_and_seq_leaves_no_partial_rows(repo):
    r, pool = repo
    board_id, col, card = await seeded(r)
    before = await board_rows(pool, board_id)
    new_col = Column(id=uuid.uuid4(), title="Doing", rank=200)
    bad = Batch(
        board_id=board_id,
        base_seq=2,
        new_seq=4,
        title="Renamed",
        description="changed",
        epoch=0,
        columns=[new_col, Column(id=col.id, title="Todo!", rank=50)],
        cards=[Card(id=card.id, column_id=new_col.id, title="moved", description="d", rank=5)],
        deleted_cards=[],
        # seq 2 is already in the log: the (board_id, seq) key refuses the insert, after the
        # board row, the columns and the card have all been written in this transaction
        events=[event(2, "column.created"), event(3, "card.moved")],
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await r.persist(bad)
    assert await board_rows(pool, board_id) == before

    # and a delete in a failing batch is rolled back too
    bad_delete = Batch(
        board_id=board_id,
        base_seq=2,
        new_seq=3,
        title="Storage",
        description="",
        epoch=0,
        deleted_cards=[card.id],
        deleted_columns=[col.id],
        events=[event(1, "column.deleted")],
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await r.persist(bad_delete)
    assert await board_rows(pool, board_id) == before


async def test_a_batch_built_on_a_stale_seq_is_refused_and_writes_nothing(repo):
    r, pool = repo
    board_id, col, card = await seeded(r)
    before = await board_rows(pool, board_id)
    for base in (0, 1, 3):
        stale = Batch(
            board_id=board_id,
            base_seq=base,
            new_seq=base + 1,
            title="Stale",
            description="stale",
            epoch=0,
            columns=[Column(id=uuid.uuid4(), title="ghost", rank=1)],
            cards=[Card(id=card.id, column_id=col.id, title="ghost", description="", rank=1)],
            deleted_columns=[col.id],
            events=[event(base + 1, "column.created")],
        )
        with pytest.raises(StaleBoard):
            await r.persist(stale)
        assert await board_rows(pool, board_id) == before

    # the right base seq still commits
    await r.persist(
        Batch(
            board_id=board_id,
            base_seq=2,
            new_seq=3,
            title="Fresh",
            description="",
            epoch=0,
            deleted_cards=[card.id],
            events=[event(3, "card.deleted")],
        )
    )
    after = await board_rows(pool, board_id)
    assert after["board"] == {"title": "Fresh", "description": "", "seq": 3}
    assert after["cards"] == [] and [e[0] for e in after["events"]] == [1, 2, 3]


async def test_a_batch_of_a_replaced_epoch_is_fenced_out_and_writes_nothing(repo):
    r, pool = repo
    board_id, col, _ = await seeded(r)
    assert (await r.load_board(board_id, recent=10)).epoch == 0  # type: ignore[union-attr]
    first = await r.claim_epoch(board_id)
    second = await r.claim_epoch(board_id)
    assert (first, second) == (1, 2)
    assert (await r.load_board(board_id, recent=10)).epoch == 2  # type: ignore[union-attr]
    assert await r.claim_epoch(uuid.uuid4()) is None
    before = await board_rows(pool, board_id)

    def batch(epoch: int, base_seq: int = 2) -> Batch:
        return Batch(
            board_id=board_id,
            base_seq=base_seq,
            new_seq=base_seq + 1,
            title="Fenced",
            description="",
            epoch=epoch,
            columns=[Column(id=col.id, title="moved", rank=1)],
            events=[event(base_seq + 1, "column.renamed")],
        )

    # The right seq, a replaced epoch (and the wrong seq too): fenced, not stale, nothing written.
    for old, base in ((first, 2), (0, 2), (first, 1)):
        with pytest.raises(FencedOut):
            await r.persist(batch(old, base))
        assert await board_rows(pool, board_id) == before
    with pytest.raises(StaleBoard):  # the current epoch on a moved seq is still "stale"
        await r.persist(batch(second, 1))
    await r.persist(batch(second))
    assert (await board_rows(pool, board_id))["board"]["seq"] == 3


async def test_a_commit_is_recognised_by_its_token_not_by_the_seq_it_reached(repo):
    r, _ = repo
    board_id, _, _ = await seeded(r)
    ours = Batch(
        board_id=board_id, base_seq=2, new_seq=3, title="Storage", description="", epoch=0, events=[event(3)]
    )
    await r.persist(ours)
    assert await r.commit_landed(board_id, 3, ours.commit_token)
    # Another writer's batch at the same seq (what a second process would have committed).
    assert not await r.commit_landed(board_id, 3, uuid.uuid4())
    assert not await r.commit_landed(board_id, 4, ours.commit_token)


async def test_deleting_a_board_removes_everything_it_owns_and_leaves_a_tombstone_for_its_members(repo):
    r, pool = repo
    board_id, _, _ = await seeded(r)
    assert await r.delete_board(board_id, USER) == 3  # seq 2 + the board.deleted event
    members = MemberRepo(pool)
    tomb = await members.deleted(board_id, USER)
    assert tomb is not None and (tomb.seq, tomb.deleted_by) == (3, USER)
    assert await members.deleted(board_id, uuid.uuid4()) is None  # a stranger learns nothing
    assert await members.deleted(uuid.uuid4(), USER) is None
    assert await r.load_board(board_id, recent=10) is None
    async with pool.acquire() as conn:
        for table in ("columns", "cards", "board_events", "board_members", "board_invitations"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE board_id = $1", board_id) == 0
