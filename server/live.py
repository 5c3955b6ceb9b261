"""The open WebSocket connections of this process: one sweep task pings them all and closes
those whose credentials were revoked; shutdown closes them all."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

from storage import IdentityRepo

if TYPE_CHECKING:
    from server.ws import Connection

log = structlog.get_logger(__name__)


class LiveConnections:
    """The open connections of this process. One task pings them all each interval, instead
    of a task per connection, and shutdown closes them all. Each interval it also asks the
    database, in one query, which of their sessions and API tokens were revoked (logout,
    refresh token reuse, password change, token revocation on any node), and closes those."""

    def __init__(self, interval_s: float, identity: IdentityRepo | None = None) -> None:
        self._interval_s = interval_s
        self._identity = identity
        self._conns: set[Connection] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, conn: Connection) -> None:
        self._conns.add(conn)

    def discard(self, conn: Connection) -> None:
        self._conns.discard(conn)

    def __len__(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ws-heartbeats")

    async def close_all(self) -> None:
        conns = list(self._conns)
        for conn in conns:
            conn.close_going_away()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            for conn in list(self._conns):
                conn.beat(now)
            try:
                await self._close_revoked()
            except Exception as e:  # the database is down: try again next interval
                log.warning("credentials_check_failed", error=repr(e))

    async def _close_revoked(self) -> None:
        if self._identity is None:
            return
        conns = list(self._conns)
        sessions = {c.credentials[0] for c in conns} - {None}
        tokens = {c.credentials[1] for c in conns} - {None}
        if not sessions and not tokens:
            return
        dead_sessions, dead_tokens = await self._identity.revoked(
            [s for s in sessions if s is not None], [t for t in tokens if t is not None]
        )
        for conn in conns:
            session_id, token_id = conn.credentials
            if session_id in dead_sessions or token_id in dead_tokens:
                conn.credentials_revoked()
