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
from actors.keeper import Keeper
from actors.lease import RENEW_SCRIPT, RedisClient, new_node_id
from protocol.commands import Command
from protocol.model import BoardSnapshot
from server.access import GrantPolicy
from server.config import Settings

# A Redis that does not answer (paused, partitioned) must fail calls rather than hang them:
# a hung call never says "Redis is down" (/health kept showing the bus as ok and the leases as
# held), and a board placement waiting on a hung lease claim never fell back to an unleased
# activation. Longer than the bus's blocking read (1 s) plus a slow reply.
_SOCKET_TIMEOUT_S = 3.0


def bus_redis(settings: Settings) -> RedisClient:
    """The client the bus and the leases use: a Redis Cluster client when configured (the
    URL names any one of its nodes), otherwise the plain one."""
    assert settings.redis_url
    timeouts = {"socket_timeout": _SOCKET_TIMEOUT_S, "socket_connect_timeout": _SOCKET_TIMEOUT_S}
    if settings.redis_cluster:
        cluster: RedisCluster = RedisCluster.from_url(settings.redis_url, **timeouts)
        return cluster
    plain: aioredis.Redis = aioredis.from_url(settings.redis_url, **timeouts)  # type: ignore[no-untyped-call]
    return plain


def keeper_redis(settings: Settings) -> Any:
    """The keeper thread's synchronous client (its own connections, off the event loop), with
    timeouts below the lease TTL so that a silent Redis cannot hold a renewal past it."""
    import redis
    import redis.cluster

    assert settings.redis_url
    timeout = settings.lease_ttl_s / 2
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


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
    if serves:
        keeper = Keeper(
            keeper_redis(settings),
            RENEW_SCRIPT,
            settings.lease_ttl_s,
            min(settings.lease_renew_s, settings.node_heartbeat_s),
        )
        leases.keeper = bus.keeper = keeper
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
