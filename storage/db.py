"""The Postgres pool: one lifetime, created and closed by the server's cleanup context."""

from __future__ import annotations

import asyncpg


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Boardcast never changes session state (no SET, LISTEN, cursors or held advisory
    locks outside a ``finally``), so the default reset query on every release (RESET ALL,
    UNLISTEN, ...) would only add a round trip to every group commit and REST read. asyncpg
    still rolls back a connection released inside a transaction before calling this."""


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=30, reset=_no_session_reset
    )
    assert pool is not None
    return pool
