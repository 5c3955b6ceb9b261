"""Typed keys for what lives on the aiohttp app (and on a request): handed to handlers, never
module globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from actors import BoardRegistry, Metrics
from server.config import Settings
from storage import BoardRepo, IdentityRepo, MemberRepo, WebhookRepo
from storage.blobs import BlobStore
from storage.blobs.ledger import BlobLedger
from storage.blobs.sweeper import BlobSweeper

if TYPE_CHECKING:
    from jobs import Dispatcher, GuardedResolver
    from server.access import User
    from server.api.blob_urls import UrlSigner
    from server.auth import Authenticator
    from server.guard import Guard
    from server.live import LiveConnections
    from server.ratelimit import Decision

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
REPO = web.AppKey("repo", BoardRepo)
MEMBERS = web.AppKey("members", MemberRepo)
IDENTITY = web.AppKey("identity", IdentityRepo)
REGISTRY = web.AppKey("registry", BoardRegistry)
CONNECTIONS: web.AppKey[LiveConnections] = web.AppKey("connections")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
GUARD: web.AppKey[Guard] = web.AppKey("guard")
BLOBS = web.AppKey("blobs", BlobStore)
BLOB_LEDGER = web.AppKey("blob_ledger", BlobLedger)
BLOB_SWEEPER = web.AppKey("blob_sweeper", BlobSweeper)
URL_SIGNER: web.AppKey[UrlSigner] = web.AppKey("url_signer")
WEBHOOK_REPO = web.AppKey("webhook_repo", WebhookRepo)
WEBHOOK_GUARD: web.AppKey[GuardedResolver] = web.AppKey("webhook_guard")  # the SSRF guard
WEBHOOKS: web.AppKey[Dispatcher | None] = web.AppKey("webhooks")  # None: this node does not deliver

# Per request, set by the guard middleware.
USER: web.RequestKey[User] = web.RequestKey("user")  # absent for an anonymous caller
RATE: web.RequestKey[Decision] = web.RequestKey("rate")  # what the RateLimit-* headers report
