"""Test databases and Redis: the machine's servers when URLs are set, embedded ones otherwise.

Each test session creates its own database (and drops only that one) and its own Redis key
prefix (and deletes only keys under it).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@contextlib.contextmanager
def postgres_database(tmp: Path) -> Iterator[str]:
    """A fresh, empty database; yields its URL and drops it afterwards."""
    admin = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if admin is None:
            from server.embedded import embedded_postgres

            admin = stack.enter_context(embedded_postgres(tmp))
        name = f"boardcast_test_{uuid.uuid4().hex[:12]}"
        _run(_admin_exec(admin, f'CREATE DATABASE "{name}"'))
        try:
            yield _with_db(admin, name)
        finally:
            _run(_admin_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url is not None:
        yield url
        return
    from server.embedded import embedded_redis

    with embedded_redis(tmp) as embedded:
        yield embedded


async def _admin_exec(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: object) -> None:
    import asyncio

    asyncio.run(coro)  # type: ignore[arg-type]
