"""The blob sweeper: deletes blobs that no committed row refers to, and only those.

It wakes when a commit trashed blobs (PostgreSQL's NOTIFY, delivered at commit, on a
connection of its own) and at every interval whatever happened, so a missed notification, a
failed deletion or a restart only delays the work. Each key is checked against the rows that
refer to blobs right before it is deleted: a referenced blob is never deleted, whatever the
ledger says. Several processes may sweep at once; deleting twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog

from storage.blobs.base import BlobError, BlobStore
from storage.blobs.ledger import TRASH_CHANNEL, BlobLedger
from storage.blobs.local import LocalBlobStore

log = structlog.get_logger(__name__)
_BATCH = 500


@dataclass(slots=True)
class SweepReport:
    deleted: int = 0  # blobs removed from the store
    kept: int = 0  # ledger entries of blobs still referenced (dropped from the ledger)
    failed: int = 0  # store deletions that failed (tried again next sweep)


class BlobSweeper:
    def __init__(
        self,
        store: BlobStore,
        ledger: BlobLedger,
        *,
        database_url: str | None,
        interval_s: float,
        orphan_grace_s: float,
        on_failure: Callable[[str], None] = lambda op: None,
        on_deleted: Callable[[str, int], None] = lambda reason, n: None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._dsn = database_url
        self._interval_s = interval_s
        self._grace_s = orphan_grace_s
        self._on_failure = on_failure
        self._on_deleted = on_deleted
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._connecting: asyncio.Future[asyncpg.Connection] | None = None
        self._waiters: list[asyncio.Future[SweepReport]] = []
        self._lock = asyncio.Lock()  # one sweep at a time in this process

    def wake(self) -> None:
        """Sweep soon (a route that just committed a deletion calls this)."""
        self._wake.set()

    def next_sweep(self) -> asyncio.Future[SweepReport]:
        """The report of the next background sweep to complete (for tests and operators)."""
        fut: asyncio.Future[SweepReport] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="blob-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unlisten()

    async def _run(self) -> None:
        while True:
            await self._listen()
            try:
                report = await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # PostgreSQL away: next interval
                self._on_failure("sweep")
                log.warning("blob_sweep_failed", error=repr(e))
            else:
                waiters, self._waiters = self._waiters, []
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(report)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()

    async def sweep(self) -> SweepReport:
        """One pass: trashed blobs first, then uploads that never committed."""
        async with self._lock:
            return await self._sweep()

    async def _sweep(self) -> SweepReport:
        report = SweepReport()
        while keys := await self._ledger.trashed(_BATCH):
            done = await self._delete_unreferenced(keys, "trash", report)
            await self._ledger.drop_trash(done)
            if len(done) < len(keys):
                break  # the store failed: leave the rest for the next sweep
        while keys := await self._ledger.stale_uploads(self._grace_s, _BATCH):
            done = await self._delete_unreferenced(keys, "orphan", report)
            await self._ledger.forget_uploads(done)
            if len(done) < len(keys):
                break
        if isinstance(self._store, LocalBlobStore):
            for part in await self._store.list_incoming(self._grace_s):
                await asyncio.to_thread(part.unlink, missing_ok=True)
        if report.deleted or report.failed:
            log.info("blob_sweep", deleted=report.deleted, kept=report.kept, failed=report.failed)
        return report

    async def _delete_unreferenced(self, keys: list[str], reason: str, report: SweepReport) -> list[str]:
        """Delete the blobs of ``keys`` that nothing refers to; returns the keys settled."""
        referenced = await self._ledger.referenced(keys)
        done = []
        deleted = 0
        for key in keys:
            if key not in referenced:
                try:
                    await self._store.delete(key)
                except BlobError as e:
                    self._on_failure("delete")
                    report.failed += 1
                    log.warning("blob_delete_failed", key=key, error=repr(e))
                    continue
                deleted += 1
            else:
                report.kept += 1
            done.append(key)
        report.deleted += deleted
        if deleted:
            self._on_deleted(reason, deleted)
        return done

    async def _listen(self) -> None:
        if self._dsn is None or (self._listener is not None and not self._listener.is_closed()):
            return
        self._listener = None  # a closed one: the connection dropped
        try:
            # shielded and kept: a stop while connecting still gets the connection to close
            self._connecting = asyncio.ensure_future(asyncpg.connect(self._dsn))
            self._listener = conn = await asyncio.shield(self._connecting)
            await conn.add_listener(TRASH_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as e:
            log.warning("blob_sweeper_listen_failed", error=repr(e))  # polling still works
            await self._unlisten()

    async def _unlisten(self) -> None:
        if self._connecting is not None and self._listener is None:
            with contextlib.suppress(Exception):
                self._listener = await self._connecting
        self._connecting = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
