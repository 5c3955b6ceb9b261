"""The blob store's lifetime in the server: the store the settings choose, its ledger, the
sweeper and the URL signer, started and stopped in one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from server.api.blob_urls import UrlSigner
from server.config import Settings
from server.keys import BLOB_LEDGER, BLOB_SWEEPER, BLOBS, METRICS, POOL, SETTINGS, URL_SIGNER
from storage.blobs import BlobStore, LocalBlobStore, S3BlobStore
from storage.blobs.ledger import BlobLedger
from storage.blobs.sweeper import BlobSweeper

log = structlog.get_logger(__name__)


async def open_store(s: Settings) -> BlobStore:
    if s.blob_store == "s3":
        assert s.blob_s3_bucket, "checked by load_settings"
        return await S3BlobStore.connect(
            bucket=s.blob_s3_bucket,
            endpoint_url=s.blob_s3_endpoint_url,
            region=s.blob_s3_region,
            access_key_id=s.blob_s3_access_key_id,
            secret_access_key=s.blob_s3_secret_access_key,
            prefix=s.blob_s3_prefix,
        )
    return LocalBlobStore(s.blob_root)


async def blobs_context(app: web.Application) -> AsyncIterator[None]:
    s, metrics = app[SETTINGS], app[METRICS]
    store = await open_store(s)
    ledger = BlobLedger(app[POOL])
    sweeper = BlobSweeper(
        store,
        ledger,
        database_url=s.database_url,
        interval_s=s.blob_sweep_interval_s,
        orphan_grace_s=s.blob_orphan_grace_s,
        on_failure=lambda op: metrics.blob_failures.labels(op=op).inc(),
        on_deleted=lambda reason, n: metrics.blob_deleted.labels(reason=reason).inc(n),
    )
    app[BLOBS], app[BLOB_LEDGER], app[BLOB_SWEEPER] = store, ledger, sweeper
    app[URL_SIGNER] = UrlSigner(s.secret)
    log.info("blob_store_ready", kind=store.kind)
    sweeper.start()
    try:
        yield
    finally:
        await sweeper.stop()
        await store.close()
