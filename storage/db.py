"""The Postgres pool: one lifetime, created and closed by the server's cleanup context."""

from __future__ import annotations

import asyncpg


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool
