"""The command bus's transport (actors/bus.py) on the machine's Redis and on a real local
three-master Redis Cluster: items between two nodes arrive in the order sent, one frame for
many connections travels once, a receiver that missed parcels (its inbox trimmed under it, or
a sender that had to drop a queue it could not write) is told, a sender never waits for Redis
and never queues without bound, and heartbeats say who is alive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from actors.bus import Bus, node_key
from actors.lease import RedisClient
from actors.metrics import Metrics
from protocol.bus import Control, Frames, Item

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["redis", "cluster"])
async def client(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisClient]:
    if request.param == "redis":
        plain = Redis.from_url(redis_url)
        yield plain
        await plain.aclose()
    else:
        nodes = request.getfixturevalue("redis_cluster_nodes")
        cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
        await cluster.initialize()
        yield cluster
        await cluster.aclose()


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}-bus-{uuid.uuid4().hex[:8]}"


class Node:
    """A bus with what it received, its gaps and its beats recorded."""

    def __init__(self, client: RedisClient, prefix: str, name: str, **kw: object) -> None:
        self.metrics = Metrics()
        self.bus = Bus(client, prefix, f"{name}-{uuid.uuid4().hex[:6]}", self.metrics, **kw)  # type: ignore[arg-type]
        self.got: list[tuple[str, Item]] = []
        self.gaps: list[str] = []
        self.arrived = asyncio.Event()

    def start(self) -> None:
        self.bus.start(self._on_item, self.gaps.append, lambda: None)

    def _on_item(self, src: str, item: Item) -> None:
        self.got.append((src, item))
        self.arrived.set()

    async def wait(self, pred: Callable[[], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.arrived.clear()
                await self.arrived.wait()


def _ctl(i: int) -> Control:
    return Control(conn_id=f"c{i}", board_id=uuid.UUID(int=i), op="closed", reason=str(i))


async def test_items_arrive_in_the_order_sent_and_a_broadcast_frame_travels_once(
    client: RedisClient, prefix: str
) -> None:
    a, b = Node(client, prefix, "a"), Node(client, prefix, "b")
    a.start()
    b.start()
    try:
        frame, board = b"\x81\x03abc", uuid.uuid4()
        for sub in (1, 2, 3):
            a.bus.send_frame(b.bus.node_id, board, frame, sub)  # one broadcast to three viewers
        for i in range(500):
            a.bus.send(b.bus.node_id, _ctl(i))
        await b.wait(lambda: len(b.got) == 501)
        first = b.got[0][1]
        assert isinstance(first, Frames) and first.frame == frame and first.subs == [1, 2, 3]
        assert first.board_id == board
        reasons = [item.reason for _, item in b.got[1:] if isinstance(item, Control)]
        assert reasons == [str(i) for i in range(500)]
        assert {src for src, _ in b.got} == {a.bus.node_id}
        assert b.gaps == []
        # every item counted once by the sender (once its write's reply is back)
        async with asyncio.timeout(5):
            while a.metrics.bus_sent._value.get() < 501:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert a.metrics.bus_sent._value.get() == 501
    finally:
        await a.bus.close()
        await b.bus.close()


async def test_a_receiver_whose_inbox_was_trimmed_under_it_is_told(client: RedisClient, prefix: str) -> None:
    a, b = Node(client, prefix, "a"), Node(client, prefix, "b")
    a.start()
    try:
        a.bus.send(b.bus.node_id, _ctl(1))
        inbox = node_key(prefix, b.bus.node_id, "in")
        while await client.xlen(inbox) < 1:  # noqa: ASYNC110 (another process's state)
            await asyncio.sleep(0.01)
        await client.xtrim(inbox, maxlen=0)  # b fell behind: what it did not read is gone
        a.bus.send(b.bus.node_id, _ctl(2))
        b.start()
        await b.wait(lambda: len(b.got) == 1)
        assert [item.reason for _, item in b.got if isinstance(item, Control)] == ["2"]
        assert b.gaps == [a.bus.node_id]
        assert b.metrics.bus_gaps._value.get() == 1
    finally:
        await a.bus.close()
        await b.bus.close()


async def test_a_sender_never_waits_for_redis_and_drops_what_it_cannot_write(prefix: str) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    a = Node(dead, prefix, "a", max_queue=100)
    a.start()
    try:
        for i in range(1000):
            a.bus.send("somebody", _ctl(i))  # returns at once every time
        link = a.bus._links["somebody"]
        assert len(link.items) <= 100
        assert a.metrics.bus_dropped._value.get() >= 800
        await asyncio.sleep(0.3)
        assert a.bus.connected is False and a.bus.last_error is not None
        assert a.metrics.redis_up._value.get() == 0
    finally:
        await a.bus.close()
        await dead.aclose()


async def test_heartbeats_say_who_is_alive_and_a_closed_node_is_gone_at_once(
    client: RedisClient, prefix: str
) -> None:
    server = Node(client, prefix, "server")
    worker = Node(client, prefix, "worker", serves=False)
    server.start()
    worker.start()
    try:
        ids = [server.bus.node_id, worker.bus.node_id, "never-started"]
        async with asyncio.timeout(5):
            while not all((await server.bus.alive(ids[:2])).values()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert (await server.bus.alive(ids))["never-started"] is False
        # only server nodes are listed for processes looking for one to route through
        assert await worker.bus.live_servers() == [server.bus.node_id]
        await server.bus.close()
        assert (await worker.bus.alive([server.bus.node_id]))[server.bus.node_id] is False
        assert await worker.bus.live_servers() == []
    finally:
        await server.bus.close()
        await worker.bus.close()
