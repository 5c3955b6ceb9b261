"""This process as a node of the cluster: its Redis client for the bus, its leases, its id.

Every `boardcast serve` is a node; with one node it is simply a cluster of one. The wiring
lives here so that :mod:`server.app` stays a list of parts.
"""

from __future__ import annotations

import uuid
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from actors import NODE_ID, BoardLeases, BoardRegistry, CommandResult, Execute, GetSnapshot, Metrics
from actors.board import BoardActor
from actors.bus import Bus
from actors.cluster import Cluster
from actors.lease import RedisClient, new_node_id
from protocol.commands import Command
from protocol.model import BoardSnapshot
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
    settings: Settings, redis: RedisClient, metrics: Metrics, node_id: str = NODE_ID, *, serves: bool = True
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
        serves=serves,
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
        # boards activated while Redis was unreachable, fenced by PostgreSQL alone until they
        # claim their lease
        "boards_unleased": max(0, len(registry) - len(registry.owned())),
        "leases": "held" if bus.connected else "at risk (Redis unreachable: renewals failing)",
        "remote_viewers": cluster.remote_viewer_count(),
        "viewers_of_remote_boards": cluster.proxied_count(),
        "bus_lag_s": round(bus.lag_s, 4),
        **({"error": bus.last_error} if bus.last_error else {}),
    }


def _no_actors(board_id: uuid.UUID) -> BoardActor:
    raise AssertionError("a client process never runs a board")


class BoardClient:
    """A process that is not a server (a job worker, a CLI, a test) sending commands to boards
    through the command bus: each goes to the board's owner (or, if no node has the board
    open, to a live server node, which activates it) and the ack comes back.

    Trusted like any process that can reach the deployment's Redis: the commands carry the
    ``author`` they are given, and no access check is made for it (authorisation belongs to
    the server's edges, which face users)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis = bus_redis(settings)
        self._cluster = build_cluster(settings, self._redis, Metrics(), new_node_id(), serves=False)
        self._registry = BoardRegistry(_no_actors, Metrics(), self._cluster)

    async def __aenter__(self) -> Self:
        self._cluster.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cluster.close()
        await self._redis.aclose()

    async def execute(
        self, board_id: uuid.UUID, author: uuid.UUID, cmd: Command, rid: str | None = None
    ) -> CommandResult:
        """Apply ``cmd`` to the board; a retry with the same ``rid`` is answered as a
        duplicate, never applied twice."""
        result: CommandResult = await self._registry.ask(
            board_id, Execute(author=author, rid=rid, cmd=cmd), self._settings.ask_timeout_s
        )
        return result

    async def snapshot(self, board_id: uuid.UUID) -> BoardSnapshot:
        snap: BoardSnapshot = await self._registry.ask(board_id, GetSnapshot(), self._settings.ask_timeout_s)
        return snap
