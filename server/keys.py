"""Typed keys for what lives on the aiohttp app: handed to handlers, never module globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from actors import BoardRegistry, Metrics
from server.config import Settings
from storage import BoardRepo

if TYPE_CHECKING:
    from server.ws import LiveConnections

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
REPO = web.AppKey("repo", BoardRepo)
REGISTRY = web.AppKey("registry", BoardRegistry)
CONNECTIONS: web.AppKey[LiveConnections] = web.AppKey("connections")
