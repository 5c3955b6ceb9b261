"""A process that is not a server sends commands to boards through the command bus and gets
their acks (server.node.BoardClient, ``boardcast command``): to a board owned by a node, to a
board no node has open (a live server node activates it), and again after the owner died.
Retries with the same request id are answered as duplicates, never applied twice."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from protocol.commands import CreateCard, CreateColumn
from server.access import DEV_USER_ID
from server.config import Settings
from server.node import BoardClient
from tests.nodes import Nodes, node_env, start_nodes
from tests.storm import stored
from tests.test_newcomer import boardcast_cmd
from tests.test_nodes_convergence import new_board
from tests.wsclient import WsClient

pytestmark = pytest.mark.timeout(60)


def client_settings(database_url: str, redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, database_url=database_url, redis_prefix=prefix, data_dir=tmp_path)


async def _viewer(nodes: Nodes, i: int, bid: str) -> WsClient:
    ws = await WsClient.connect(nodes.http, nodes[i].ws_url)
    assert (await ws.join(bid))["type"] == "joined"
    return ws


async def test_a_board_client_gets_acks_from_the_owner_and_after_a_failover(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-client-{uuid.uuid4().hex[:8]}"
    async with start_nodes(3, tmp_path, database_url, redis_url, prefix) as nodes:
        bid, col = await new_board(nodes)
        watcher = await _viewer(nodes, 1, bid)
        owner = await nodes.owner(bid)
        settings = client_settings(database_url, redis_url, prefix, tmp_path)
        column = uuid.UUID(col)
        async with BoardClient(settings) as client:
            one = await client.execute(
                uuid.UUID(bid), DEV_USER_ID, CreateCard(column_id=column, title="job 1"), "job-1"
            )
            assert not one.duplicate and one.seq > 0
            # the viewer (on another node than the client's route, perhaps) sees it as any event
            events = await watcher.wait_seq(bid, one.seq)
            assert events[-1]["rid"] == "job-1" and events[-1]["event"]["card"]["title"] == "job 1"
            again = await client.execute(
                uuid.UUID(bid), DEV_USER_ID, CreateCard(column_id=column, title="job 1"), "job-1"
            )
            assert again.duplicate and again.seq == one.seq
            # many at once, each acked once, in one order
            many = await asyncio.gather(
                *(
                    client.execute(
                        uuid.UUID(bid), DEV_USER_ID, CreateCard(column_id=column, title=f"m{i}"), f"m-{i}"
                    )
                    for i in range(30)
                )
            )
            assert sorted(r.seq for r in many) == list(range(one.seq + 1, one.seq + 31))
            assert (await nodes.owner(bid)) is owner  # the client never took the board

            # a board nobody has open: a live server node activates it
            async with nodes.http.post(f"{nodes[2].base}/api/v1/boards", json={"title": "idle"}) as r:
                other = uuid.UUID((await r.json())["id"])
            assert await nodes.lease(str(other)) is None
            fresh = await client.execute(other, DEV_USER_ID, CreateColumn(title="first"), "first-1")
            assert fresh.seq == 1 and not fresh.duplicate
            taker = await nodes.owner(str(other))
            assert taker.running  # a server node, not the client

            # the owner dies: the next command (same request ids as a retry would use) is acked
            # by the board's next owner, within a bound
            await owner.kill()
            t0 = time.monotonic()
            after = await client.execute(
                uuid.UUID(bid), DEV_USER_ID, CreateCard(column_id=column, title="after"), "after-1"
            )
            failover_s = time.monotonic() - t0
            print(f"\nBoardClient: acked by the next owner {failover_s:.2f} s after kill -9 of the owner")
            assert failover_s < 10 and not after.duplicate
            assert (await nodes.owner(bid)) is not owner
            dup = await client.execute(
                uuid.UUID(bid), DEV_USER_ID, CreateCard(column_id=column, title="after"), "after-1"
            )
            assert dup.duplicate and dup.seq == after.seq
        s = await stored(database_url, bid)
        assert s.rid_counts["job-1"] == 1 and s.rid_counts["after-1"] == 1
        assert all(s.rid_counts[f"m-{i}"] == 1 for i in range(30))
        assert s.by_rid["after-1"] == after.seq
        await watcher.close()


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *boardcast_cmd(), "command", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_boardcast_command_sends_one_command_and_prints_its_ack(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-cli-{uuid.uuid4().hex[:8]}"
    async with start_nodes(2, tmp_path, database_url, redis_url, prefix) as nodes:
        bid, col = await new_board(nodes)
        watcher = await _viewer(nodes, 1, bid)
        env = node_env(database_url, redis_url, prefix, tmp_path, {})
        cmd = json.dumps({"op": "card.create", "column_id": col, "title": "from the CLI"})
        code, out, err = await _cli(env, bid, cmd, "--rid", "cli-1")
        assert code == 0, (out, err)
        ack = json.loads(out.strip().splitlines()[-1])
        assert ack["duplicate"] is False and ack["seq"] > 0, ack
        events = await watcher.wait_seq(bid, ack["seq"])
        assert events[-1]["rid"] == "cli-1" and events[-1]["event"]["card"]["title"] == "from the CLI"
        code, out, err = await _cli(env, bid, cmd, "--rid", "cli-1")
        assert code == 0 and json.loads(out.strip().splitlines()[-1]) == {
            "seq": ack["seq"],
            "duplicate": True,
        }
        # bad input: a clear message, exit 2, nothing sent
        code, out, err = await _cli(env, bid, '{"op": "card.create"}')
        assert code == 2 and "bad command" in err, (code, out, err)
        code, out, err = await _cli({k: v for k, v in env.items() if k != "REDIS_URL"}, bid, cmd)
        assert code == 2 and "REDIS_URL" in err, (code, out, err)
        # a refused command: the board's error, exit 1
        missing = json.dumps({"op": "card.create", "column_id": str(uuid.uuid4()), "title": "t"})
        code, out, err = await _cli(env, bid, missing)
        assert code == 1 and json.loads(out.strip().splitlines()[-1])["error"]["code"] == "not_found", (
            out,
            err,
        )
        s = await stored(database_url, bid)
        assert s.rid_counts["cli-1"] == 1 and len(s.seqs) == ack["seq"]
        await watcher.close()
