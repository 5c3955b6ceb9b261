"""The convergence test (tests/test_nodes_convergence.py) with the nodes on a real local
three-master Redis Cluster (tests/rediscluster.py): every key of a board shares its slot
(hash tags), the bus and the leases work unchanged across the masters."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.nodes import start_nodes
from tests.test_nodes_convergence import converge

pytestmark = pytest.mark.timeout(90)


async def test_clients_on_three_nodes_converge_on_a_three_master_redis_cluster(
    tmp_path: Path, database_url: str, redis_cluster_nodes: list[tuple[str, int]]
) -> None:
    host, port = redis_cluster_nodes[0]
    url = f"redis://{host}:{port}/0"
    prefix = f"bctest-cluster-{uuid.uuid4().hex[:8]}"
    async with start_nodes(3, tmp_path, database_url, url, prefix, redis_cluster=True) as nodes:
        await converge(nodes, database_url)
        # the keys really are spread over more than one master (the nodes' inboxes and the
        # board's lease hash to different slots)
        assert isinstance(nodes.redis, RedisCluster)
        masters = set()
        for key in [k async for k in nodes.redis.scan_iter(match=f"{prefix}*")]:
            masters.add(nodes.redis.get_node_from_key(key).port)
        assert len(masters) >= 2, masters
