"""Test databases and Redis: the machine's servers when URLs are set, embedded ones otherwise.

Each test session creates its own database (and drops only that one) and its own Redis key
prefix (and deletes only keys under it).

The embedded PostgreSQL keeps its data outside pytest's temporary tree: run as root, pgserver
runs PostgreSQL as an unprivileged user that must traverse every parent folder, and every
pytest session that starts (another engineer's, another CI job's) resets the shared
/tmp/pytest-of-<user> to mode 0700, possibly between pgserver opening it up and PostgreSQL
starting, or while it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@contextlib.contextmanager
def private_data_root(prefix: str) -> Iterator[Path]:
    """A folder of our own directly under the system's temporary folder, that any user may
    traverse (see the module's docstring), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database; yields its URL and drops it afterwards."""
    admin = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if admin is None:
            from server.embedded import embedded_postgres

            root = stack.enter_context(private_data_root("boardcast-test-pg-"))
            admin = stack.enter_context(embedded_postgres(root))
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
