"""The owner of a board dies or is paused under a write storm (README "Several nodes",
issue 9 "Failover"): clients retry with their request ids and resume with since_seq; nothing
acknowledged is lost, nothing is applied or acknowledged twice, and the board is taken over
by another node within a bounded time."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from tests.nodes import start_nodes
from tests.storm import Client, check_storm
from tests.test_nodes_convergence import new_board, new_column, spread

pytestmark = pytest.mark.timeout(90)

PER_CLIENT = 90


@pytest.fixture(params=["redis", "redis-cluster"])
def bus_redis(request: pytest.FixtureRequest, redis_url: str) -> tuple[str, bool]:
    """The Redis the nodes share: one server, or a local three-master Redis Cluster."""
    if request.param == "redis":
        return redis_url, False
    host, port = request.getfixturevalue("redis_cluster_nodes")[0]
    return f"redis://{host}:{port}/0", True


async def test_kill_9_of_the_owner_mid_storm_loses_nothing_acked_and_fails_over(
    tmp_path: Path, database_url: str, bus_redis: tuple[str, bool], redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-kill-{uuid.uuid4().hex[:8]}"
    url, cluster = bus_redis
    async with start_nodes(3, tmp_path, database_url, url, prefix, redis_cluster=cluster) as nodes:
        bid, col = await new_board(nodes)
        other = await new_column(nodes, bid, 1, "d")
        clients = spread(nodes, bid, col, other=other)  # a mixed storm
        viewers = [Client(f"v{i}", nodes, i, bid, col) for i in range(3)]  # watching only
        for c in [*clients, *viewers]:
            await c.connect()
        owner = await nodes.owner(bid)
        held = await nodes.lease(bid)
        assert held is not None
        tasks = [asyncio.create_task(c.storm(PER_CLIENT)) for c in clients]
        try:
            # in the middle of the storm: some commands of every client acknowledged
            watch = next(c for c in clients if c.home != owner.index)
            assert watch.ws is not None
            await watch.ws.wait_until(lambda log: sum(m["type"] == "ack" for m in log) >= 15, what="acks")
            await owner.kill()
            killed_at = time.monotonic()  # once reaped: until then it may still answer
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        # the first command accepted after the kill: sent after it, acknowledged by the new owner
        after = [c.ack_at[rid] for c in clients for rid in c.acks if c.sent_at[rid] > killed_at]
        assert after, "no command was accepted after the kill"
        failover_s = min(after) - killed_at
        print(f"\nfailover: {failover_s:.2f} s from kill -9 of the owner to the first accepted command")
        assert failover_s < 10, failover_s

        survivors = [c for c in [*clients, *viewers] if c.home != owner.index]
        moved = [c for c in [*clients, *viewers] if c.home == owner.index]
        await check_storm(database_url, bid, [*clients, *viewers], all_acked=True)
        new_owner = await nodes.owner(bid)
        again = await nodes.lease(bid)
        assert new_owner is not owner and again is not None and again[0] > held[0], (held, again)
        # the owner's clients lost their socket and resumed elsewhere; the others were told
        # the board left them and resumed on their own node
        for c in moved:
            assert len(c.connects) >= 2 and owner.index not in c.connects[1:], (c.name, c.connects)
        for c in survivors:
            assert any(m["reason"] == "board_unavailable" for m in c.lefts), (c.name, c.lefts)
            assert c.connects[0] == c.home
        assert sum(len(c.acks) for c in clients) == PER_CLIENT * len(clients)
        for c in [*clients, *viewers]:
            await c.close()


FAST = {
    "BOARDCAST_LEASE_TTL_S": "1",
    "BOARDCAST_LEASE_RENEW_S": "0.25",
    "BOARDCAST_NODE_HEARTBEAT_S": "0.25",
    "BOARDCAST_NODE_TTL_S": "1",
}


async def test_a_paused_owner_past_its_lease_is_fenced_and_acks_nothing_twice(
    tmp_path: Path, database_url: str, bus_redis: tuple[str, bool], redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-stop-{uuid.uuid4().hex[:8]}"
    url, cluster = bus_redis
    async with start_nodes(3, tmp_path, database_url, url, prefix, FAST, redis_cluster=cluster) as nodes:
        bid, col = await new_board(nodes)
        a = Client("a", nodes, 0, bid, col)
        await a.connect()
        owner = await nodes.owner(bid)
        others = [n for n in nodes.nodes if n is not owner]
        a.home = owner.index
        if a.connects != [owner.index]:
            await a.connect()  # a viewer on the owner itself
        b = Client("b", nodes, others[0].index, bid, col)
        c = Client("c", nodes, others[1].index, bid, col, encoding="json")
        for x in (b, c):
            await x.connect()
        await asyncio.gather(*(x.storm(6) for x in (a, b, c)))
        held = await nodes.lease(bid)
        assert held is not None and held[1] == owner.node_id

        # a burst sent and the owner paused at once: some of it read and in the board's hands
        # (perhaps in a commit on its way to PostgreSQL), the rest in the socket buffer
        assert a.ws is not None
        held_rids = [f"a-held-{i}" for i in range(10)]
        mark = len(a.ws.log)
        for rid in held_rids:
            a.sent_at[rid] = time.monotonic()
            await a.ws.send_cmd(bid, {"op": "card.create", "column_id": col, "title": rid}, rid=rid)
        owner.pause()
        paused_at = len(a.ws.log)
        # another node takes the board over once the lease expired, and commits
        await b.settle([f"b-during-{i}" for i in range(3)], deadline_s=20)
        assert set(b.acks) >= {f"b-during-{i}" for i in range(3)}, b.failed
        taken = await nodes.lease(bid)
        assert taken is not None and taken[1] != owner.node_id and taken[0] > held[0], (held, taken)

        owner.resume()
        # the old owner's board commits nothing: its commands are refused and its viewer told
        await a.ws.wait_until(
            lambda log: (
                all(
                    any(m.get("rid") == r and m["type"] in ("ack", "error") for m in log[mark:])
                    for r in held_rids
                )
                and any(m["type"] == "left" for m in log[mark:])
            ),
            timeout=15,
            what="the held commands' answers and left",
        )
        a.scan()
        answers = {
            m["rid"]: m
            for m in a.ws.log[mark:]
            if m.get("rid") in held_rids and m["type"] in ("ack", "error")
        }
        woke = {r: m for r, m in answers.items() if a.ws.log.index(m) >= paused_at}
        # what it answered after waking: refused (by the fence, or as the board had stopped),
        # or acked for a commit that reached PostgreSQL before the pause (check_storm below
        # holds every ack to the seq it is stored at)
        for m in woke.values():
            assert m["type"] == "ack" or m["code"] in ("unavailable", "not_joined"), woke
        print("\nheld commands:", {r: m.get("code", m["type"]) for r, m in answers.items()})
        assert [m["reason"] for m in a.lefts] == ["board_unavailable"], a.lefts
        log = owner.log()
        assert any(w in log for w in ("commit_fenced_out", "board_lease_lost", "lease_expired")), log[-3000:]

        # a retries them with the same request ids (through its node, which now forwards)
        a.joined = False
        await a.settle(held_rids, deadline_s=20)
        await asyncio.gather(*(x.storm(6) for x in (b, c)))
        s = await check_storm(database_url, bid, [a, b, c], all_acked=True)
        assert all(s.rid_counts[r] == 1 for r in held_rids)  # each applied once in the end
        # nothing the old owner held was acked by it and then again at another seq
        assert all(len(a.ack_seqs[r]) == 1 for r in held_rids)
        for x in (a, b, c):
            await x.close()


async def test_a_paused_viewer_node_taken_for_dead_resyncs_its_viewers_when_it_wakes(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    """A node that is not the owner is paused past its heartbeat TTL: the owner takes it for
    dead and drops its viewers from the board. When it wakes, its viewers must not be left
    joined to a board that no longer sends them anything (a silent gap): they follow the
    board again, told `board_unavailable` and resuming if need be."""
    prefix = f"{redis_prefix}-vstop-{uuid.uuid4().hex[:8]}"
    async with start_nodes(3, tmp_path, database_url, redis_url, prefix, FAST) as nodes:
        bid, col = await new_board(nodes)
        writer = Client("w", nodes, 0, bid, col)
        await writer.connect()
        owner = await nodes.owner(bid)
        writer.home = owner.index
        if writer.connects != [owner.index]:
            await writer.connect()
        sleeper = next(n for n in nodes.nodes if n is not owner)
        watcher = Client("v", nodes, sleeper.index, bid, col)  # a viewer only
        await watcher.connect()
        await writer.storm(6)
        sleeper.pause()
        await writer.storm(6)
        # the owner notices: its remote viewer gone from /health (another process: polled)
        async with asyncio.timeout(10):
            while True:
                if (await owner.health(nodes.http))["node"]["remote_viewers"] == 0:
                    break
                await asyncio.sleep(0.1)
        assert "viewer_node_gone" in owner.log()
        sleeper.resume()
        await writer.storm(6)
        s = await check_storm(database_url, bid, [writer, watcher], all_acked=True)
        assert watcher.model is not None and watcher.model.seq == s.seqs[-1]
        # told to join again (rather than left joined to a board that sends it nothing)
        assert [m["reason"] for m in watcher.lefts] == ["board_unavailable"], watcher.lefts
        for c in (writer, watcher):
            await c.close()
