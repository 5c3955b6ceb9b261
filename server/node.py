"""This process as a node of the cluster: its Redis client for the bus, its leases, its id.

Every `boardcast serve` is a node; with one node it is simply a cluster of one. The wiring
lives here so that :mod:`server.app` stays a list of parts.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from actors import NODE_ID, BoardLeases, BoardRegistry, Metrics
from actors.bus import Bus
from actors.cluster import Cluster
from actors.lease import RedisClient
from server.access import GrantPolicy
from server.config import Settings


def bus_redis(settings: Settings) -> RedisClient:
    """The client the bus and the leases use: a Redis Cluster client when configured (the
    URL names any one of its nodes), otherwise the plain one."""
    assert settings.redis_url
    if settings.redis_cluster:
        cluster: RedisCluster = RedisCluster.from_url(settings.redis_url)
        return cluster
    plain: aioredis.Redis = aioredis.from_url(settings.redis_url)  # type: ignore[no-untyped-call]
    return plain


def build_cluster(
    settings: Settings, redis: RedisClient, metrics: Metrics, node_id: str = NODE_ID
) -> Cluster:
    leases = BoardLeases(
        redis, settings.redis_prefix, node_id, ttl_s=settings.lease_ttl_s, renew_s=settings.lease_renew_s
    )
    bus = Bus(
        redis,
        settings.redis_prefix,
        node_id,
        metrics,
        heartbeat_s=settings.node_heartbeat_s,
        heartbeat_ttl_s=settings.node_ttl_s,
    )
    return Cluster(bus, leases, GrantPolicy(), metrics, request_timeout_s=settings.ask_timeout_s)


def node_report(registry: BoardRegistry) -> dict[str, Any]:
    """What /health shows of this node in the cluster."""
    cluster = registry.cluster
    if cluster is None:
        return {}
    bus = cluster.bus
    return {
        "id": cluster.node_id,
        "redis": "ok" if bus.connected else "down",
        "boards_owned": len(registry.owned()),
        "leases": "held" if bus.connected else "at risk (Redis unreachable: renewals failing)",
        "remote_viewers": cluster.remote_viewer_count(),
        "viewers_of_remote_boards": cluster.proxied_count(),
        "bus_lag_s": round(cluster.lag_s, 4),
        **({"error": bus.last_error} if bus.last_error else {}),
    }
