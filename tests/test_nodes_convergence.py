"""Clients spread over three real nodes editing one board at once (docs/PROTOCOL.md, README
"Several nodes"): the board runs on one node, the others forward their clients' commands and
relay its events; every client ends with PostgreSQL's board, having seen every event in seq
order, with no gap and no duplicate, and every acknowledged command is stored as acked."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.boardmodel import db_state, normalise_snapshot, rest_snapshot
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
    return bid, await new_column(nodes, bid, via)


async def new_column(nodes: Nodes, bid: str, via: int = 0, title: str = "c") -> str:
    async with nodes.http.post(f"{nodes[via].base}/api/v1/boards/{bid}/columns", json={"title": title}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


def spread(nodes: Nodes, bid: str, col: str, per_node: int = 2, other: str | None = None) -> list[Client]:
    """``per_node`` clients on every node, both wire formats (a mixed storm with ``other``)."""
    return [
        Client(f"n{i}c{k}", nodes, i, bid, col, encoding=("msgpack", "json")[k % 2], other_column=other)
        for i in range(len(nodes))
        for k in range(per_node)
    ]


async def converge(nodes: Nodes, database_url: str) -> None:
    """A mixed storm (creations, edits, moves between two columns) from clients on every
    node, then every client, every node's REST snapshot and PostgreSQL agree."""
    bid, col = await new_board(nodes)
    other = await new_column(nodes, bid, via=len(nodes) - 1, title="d")  # REST through another node
    clients = spread(nodes, bid, col, other=other)
    try:
        for c in clients:
            await c.connect()
        owner = await nodes.owner(bid)
        await asyncio.gather(*(c.storm(PER_CLIENT) for c in clients))
        s = await check_storm(database_url, bid, clients, all_acked=True)
        assert len(s.by_rid) == PER_CLIENT * len(clients)
        ops = Counter(op["op"] for c in clients for op in c.ops.values())
        assert min(ops["card.create"], ops["card.update"], ops["card.move"]) > PER_CLIENT, ops
        # REST reads on every node (forwarded to the owner from the others) say the same
        want = await db_state(database_url, bid)
        for n in nodes.nodes:
            assert normalise_snapshot(await rest_snapshot(nodes.http, n.base, bid)) == want, n.index
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
