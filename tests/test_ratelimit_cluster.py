"""The shared rate limiter on a real local three-master Redis Cluster (BOARDCAST_REDIS_CLUSTER):
every bucket's script runs on its own key's node, buckets are shared by every client of the
cluster, and an unreachable cluster is `RateLimiterUnavailable`, not a hang."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from server.config import Rate
from server.ratelimit import RateLimiter, RateLimiterUnavailable

pytestmark = pytest.mark.timeout(30)


async def test_buckets_on_a_cluster_allow_their_burst_then_refuse(redis_cluster_nodes) -> None:
    prefix = f"bctest-rl-{uuid.uuid4().hex[:8]}"
    clients = [
        RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster_nodes]) for _ in range(2)
    ]
    seed = Redis(host=redis_cluster_nodes[0][0], port=redis_cluster_nodes[0][1])
    try:
        a, b = (RateLimiter(seed, prefix, cluster=c) for c in clients)
        rate = Rate(5, 60)
        keys = [f"user-{i}" for i in range(20)]  # spread over the cluster's slots and nodes
        for key in keys:
            decisions = [await (a if i % 2 else b).check("writes", key, rate) for i in range(6)]
            assert [d.allowed for d in decisions] == [True] * 5 + [False], key
            assert decisions[-1].retry_after_s > 0
        nodes = {clients[0].get_node_from_key(a.redis_key("writes", k)).port for k in keys}
        assert len(nodes) > 1  # the buckets really live on several masters
    finally:
        for c in clients:
            await c.aclose()
        await seed.aclose()


async def test_an_unreachable_cluster_is_unavailable(redis_cluster_nodes) -> None:
    cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster_nodes])
    await cluster.initialize()
    seed = Redis(host=redis_cluster_nodes[0][0], port=redis_cluster_nodes[0][1])
    limiter = RateLimiter(seed, "bctest-rl-down", timeout_s=0.2, cluster=cluster)
    await cluster.aclose()
    broken = RedisCluster(host="127.0.0.1", port=1)  # never initialised: nothing listens
    limiter._cluster = broken
    with pytest.raises(RateLimiterUnavailable):
        await limiter.check("writes", "someone", Rate(5, 60))
    await seed.aclose()
