"""Board leases (actors/lease.py) against the machine's Redis and against a real local
three-master Redis Cluster: a claim excludes every other node, only the holder renews or
releases, an expired lease goes to the next claimer with a higher epoch, and all keys of one
board live in one cluster slot."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis
import redis.cluster
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from actors.keeper import Keeper
from actors.lease import NODE_ID, RENEW_SCRIPT, BoardLeases, Lease, RedisClient, board_key

pytestmark = pytest.mark.timeout(30)

Leases = Callable[..., BoardLeases]


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
    # Under the session's prefix, whose keys the session removes at the end.
    return f"{redis_prefix}-lease-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def leases(client: RedisClient, prefix: str) -> AsyncIterator[Leases]:
    """Each node's leases with its keeper thread, on a synchronous client of the same Redis
    (or cluster), as a server node has them (server/node.py)."""
    keepers: list[Keeper] = []

    def make(node_id: str, ttl_s: float = 2.0, renew_s: float = 0.5) -> BoardLeases:
        nodes = BoardLeases(client, prefix, node_id=node_id, ttl_s=ttl_s, renew_s=renew_s)
        if isinstance(client, RedisCluster):
            sync: object = redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(n.host, n.port) for n in client.get_nodes()]
            )
        else:
            sync = redis.Redis(
                **{k: client.connection_pool.connection_kwargs[k] for k in ("host", "port", "db")}
            )
        nodes.keeper = Keeper(sync, RENEW_SCRIPT, ttl_s, renew_s)
        nodes.keeper.start()
        keepers.append(nodes.keeper)
        return nodes

    yield make
    for keeper in keepers:
        await keeper.stop()


async def _expired(nodes: BoardLeases, board: uuid.UUID) -> None:
    # Redis expires the key on its own clock: there is no event to await, only its absence.
    while await nodes.holder(board) is not None:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def test_a_claim_excludes_a_second_node_until_released(leases: Leases) -> None:
    a, b = leases("node-a"), leases("node-b")
    board = uuid.uuid4()
    lease = await a.claim(board)
    assert lease is not None and lease.node_id == "node-a" and lease.epoch >= 1 and lease.valid()
    assert await b.claim(board) is None
    holder = await b.holder(board)
    assert holder is not None and (holder.node_id, holder.epoch) == ("node-a", lease.epoch)
    # Claiming again what is ours (a claim whose reply was lost) gives the same lease back.
    again = await a.claim(board)
    assert again is not None and again.epoch == lease.epoch
    assert await a.release(lease)
    assert await a.holder(board) is None
    taken = await b.claim(board)
    assert taken is not None and taken.node_id == "node-b" and taken.epoch == lease.epoch + 1
    assert await a.claim(uuid.uuid4()) is not None  # another board is another lease


async def test_renew_extends_only_our_own_lease(leases: Leases, client: RedisClient) -> None:
    a, b = leases("node-a", ttl_s=5.0), leases("node-b", ttl_s=5.0)
    board = uuid.uuid4()
    lease = await a.claim(board)
    assert lease is not None
    await client.pexpire(a.lease_key(board), 1000)
    renewed = await a.renew(lease)
    assert renewed is not None and renewed.epoch == lease.epoch and renewed.deadline >= lease.deadline
    assert 4000 < await client.pttl(a.lease_key(board)) <= 5000
    # Another node's renewal, with a lease that names it (or an older epoch of ours), fails
    # and leaves the TTL alone.
    await client.pexpire(a.lease_key(board), 1000)
    forged = Lease(board, "node-b", lease.epoch, lease.deadline)
    assert await b.renew(forged) is None
    assert await a.renew(Lease(board, "node-a", lease.epoch - 1, lease.deadline)) is None
    assert await client.pttl(a.lease_key(board)) <= 1000


async def test_an_expired_lease_goes_to_another_node_with_a_higher_epoch(leases: Leases) -> None:
    a, b = leases("node-a", ttl_s=0.2, renew_s=0.05), leases("node-b")
    board = uuid.uuid4()
    old = await a.claim(board)
    assert old is not None
    await _expired(a, board)
    new = await b.claim(board)
    assert new is not None and new.epoch > old.epoch
    # The former owner can neither renew nor release what is now someone else's.
    assert await a.renew(old) is None
    assert not await a.release(old)
    holder = await a.holder(board)
    assert holder is not None and (holder.node_id, holder.epoch) == ("node-b", new.epoch)


async def test_concurrent_claims_from_many_nodes_have_exactly_one_winner(leases: Leases) -> None:
    board = uuid.uuid4()
    nodes = [leases(f"node-{i}") for i in range(40)]
    won = [lease for lease in await asyncio.gather(*(n.claim(board) for n in nodes)) if lease is not None]
    assert len(won) == 1
    holder = await nodes[0].holder(board)
    assert holder is not None and (holder.node_id, holder.epoch) == (won[0].node_id, won[0].epoch)


async def test_a_kept_lease_outlives_its_ttl_and_reports_its_loss(
    leases: Leases, client: RedisClient
) -> None:
    a, b = leases("node-a", ttl_s=0.3, renew_s=0.05), leases("node-b", ttl_s=0.3, renew_s=0.05)
    board = uuid.uuid4()
    lease = await a.claim(board)
    assert lease is not None
    loop = asyncio.get_running_loop()
    renewed: list[Lease] = []
    enough: asyncio.Future[None] = loop.create_future()
    lost: asyncio.Future[Lease] = loop.create_future()

    def on_renewed(current: Lease) -> None:
        renewed.append(current)
        if len(renewed) == 12 and not enough.done():  # 12 x 50 ms: twice the TTL
            enough.set_result(None)

    keeper = a.keep(lease, on_lost=lost.set_result, on_renewed=on_renewed)
    try:
        await enough
        assert await b.claim(board) is None  # still a's, long after the first TTL
        # Taken away behind the keeper's back (as if it had expired): the next renewal is
        # refused and the loss reported, once.
        await client.delete(a.lease_key(board))
        assert await b.claim(board) is not None
        assert await lost == lease
        await keeper  # it ended with the loss
    finally:
        keeper.cancel()


async def test_all_keys_of_a_board_share_one_cluster_slot(
    redis_cluster_nodes: list[tuple[str, int]], prefix: str
) -> None:
    cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster_nodes])
    await cluster.initialize()
    try:
        nodes = BoardLeases(cluster, prefix, node_id=NODE_ID)
        slots = set()
        for board in (uuid.uuid4() for _ in range(20)):
            keys = [nodes.lease_key(board), nodes.epoch_key(board)] + [
                board_key(prefix, board, name) for name in ("events", "commands", "replies")
            ]
            board_slots = {await cluster.execute_command("CLUSTER KEYSLOT", k) for k in keys}
            assert len(board_slots) == 1, keys
            slots |= board_slots
        assert len(slots) > 1  # boards spread over the slots, hence over the masters
    finally:
        await cluster.aclose()


def test_settings_that_would_break_the_lease_are_refused(client: RedisClient) -> None:
    with pytest.raises(ValueError, match="prefix"):
        BoardLeases(client, "bc{x}")
    with pytest.raises(ValueError, match="node id"):
        BoardLeases(client, "bc", node_id="a:b")
    with pytest.raises(ValueError, match="shorter than its TTL"):
        BoardLeases(client, "bc", ttl_s=1.0, renew_s=1.0)
    assert ":" not in NODE_ID


async def test_hundreds_of_kept_leases_are_renewed_together_and_none_is_lost(
    leases: Leases, client: RedisClient
) -> None:
    """One node keeping many boards renews them all in one pipelined round trip per interval:
    none of them expires, every one is renewed about once per interval, and letting one go
    stops only its renewals."""
    a = leases("node-a", ttl_s=0.4, renew_s=0.1)
    boards = [uuid.uuid4() for _ in range(300)]
    claimed = [await a.claim(board) for board in boards]
    renewals: dict[uuid.UUID, int] = {board: 0 for board in boards}
    lost: list[Lease] = []

    def renewed(lease: Lease) -> None:
        renewals[lease.board_id] += 1

    kept = [a.keep(lease, on_lost=lost.append, on_renewed=renewed) for lease in claimed if lease is not None]
    try:
        await asyncio.sleep(1.2)  # three TTLs
        assert lost == []
        assert min(renewals.values()) >= 5, min(renewals.values())
        kept[0].cancel()
        before = renewals[boards[0]]
        await asyncio.sleep(0.5)
        assert renewals[boards[0]] == before  # let go: no longer renewed, and not "lost"
        assert lost == []
        b = leases("node-b", ttl_s=0.4, renew_s=0.1)
        await _expired(b, boards[0])
        assert await b.claim(boards[0]) is not None
        assert await b.claim(boards[1]) is None  # still a's
    finally:
        for k in kept:
            k.cancel()
