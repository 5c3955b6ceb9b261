"""Clients spread over three real nodes editing one board at once (docs/PROTOCOL.md, README
"Several nodes"): the board runs on one node, the others forward their clients' commands and
relay its events; every client ends with PostgreSQL's board, having seen every event in seq
order, with no gap and no duplicate, and every acknowledged command is stored as acked."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.nodes import Nodes, start_nodes
from tests.storm import Client, check_storm

pytestmark = pytest.mark.timeout(90)

PER_CLIENT = 60


async def new_board(nodes: Nodes, via: int = 0) -> tuple[str, str]:
    """A board with one column, made over REST on node ``via``; (board id, column id)."""
    base = nodes[via].base
    async with nodes.http.post(f"{base}/api/v1/boards", json={"title": "several nodes"}) as r:
        assert r.status == 201, await r.text()
        bid = str((await r.json())["id"])
    async with nodes.http.post(f"{base}/api/v1/boards/{bid}/columns", json={"title": "c"}) as r:
        assert r.status == 201, await r.text()
        col = str((await r.json())["id"])
    return bid, col


def spread(nodes: Nodes, bid: str, col: str, per_node: int = 2) -> list[Client]:
    """``per_node`` clients on every node, both wire formats."""
    return [
        Client(f"n{i}c{k}", nodes, i, bid, col, encoding=("msgpack", "json")[k % 2])
        for i in range(len(nodes))
        for k in range(per_node)
    ]


async def converge(nodes: Nodes, database_url: str) -> None:
    bid, col = await new_board(nodes)
    clients = spread(nodes, bid, col)
    try:
        for c in clients:
            await c.connect()
        owner = await nodes.owner(bid)
        await asyncio.gather(*(c.storm(PER_CLIENT) for c in clients))
        s = await check_storm(database_url, bid, clients, all_acked=True)
        assert len(s.by_rid) == PER_CLIENT * len(clients)
        # nobody had to resync: no board left anybody, every client stayed on its first node
        for c in clients:
            assert c.lefts == [] and c.connects == [c.home] and c.snapshots_on_resume == 0, c.name
        # the board really ran on one node and the others relayed it
        for n in nodes.nodes:
            node = (await n.health(nodes.http))["node"]
            assert node["boards_owned"] == (1 if n is owner else 0), (n.index, node)
            if n is not owner:
                assert node["viewers_of_remote_boards"] == 2, (n.index, node)
    finally:
        for c in clients:
            await c.close()


async def test_clients_on_three_nodes_converge_to_postgres_with_every_event_in_order(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-conv-{uuid.uuid4().hex[:8]}"
    async with start_nodes(3, tmp_path, database_url, redis_url, prefix) as nodes:
        await converge(nodes, database_url)
