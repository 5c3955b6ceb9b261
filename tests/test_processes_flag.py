"""`boardcast serve --processes 2`: two full nodes on one port (SO_REUSEPORT) under a parent
that migrated once. Connections land on both, a board lives in one of them and the other
forwards to it, a child that dies is started again, and SIGTERM stops every child."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.test_newcomer import boardcast_cmd, open_log, wait_healthy
from tests.wsclient import WsClient

pytestmark = pytest.mark.timeout(90)


def _pid(node_id: str) -> int:
    return int(node_id.split("-")[-2])  # node ids are host-pid-random


async def _node_ids(base: str, want: int, tries: int = 200) -> set[str]:
    """Node ids answering on the shared port (a new connection each time)."""
    seen: set[str] = set()
    for _ in range(tries):
        async with aiohttp.ClientSession() as http, http.get(f"{base}/health") as r:
            seen.add((await r.json())["node"]["id"])
        if len(seen) >= want:
            break
    return seen


async def test_two_processes_share_the_port_and_serve_one_board_together(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        BOARDCAST_PORT=str(port),
        BOARDCAST_AUTH="none",
        BOARDCAST_RATE_LIMIT="off",
        BOARDCAST_REDIS_PREFIX=f"{redis_prefix}-procs",
        BOARDCAST_DATA_DIR=str(tmp_path / "data"),
    )
    log = open_log(tmp_path)
    try:
        parent = await asyncio.create_subprocess_exec(
            *boardcast_cmd(),
            "serve",
            "--processes",
            "2",
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        os.close(log)
    base = f"http://127.0.0.1:{port}"
    survivors: set[int] = set()
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(parent, base, http, tmp_path)
        nodes = await _node_ids(base, 2)
        assert len(nodes) == 2, nodes
        pids = {_pid(n) for n in nodes}
        assert parent.pid not in pids

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/boards", json={"title": "two processes"}) as r:
                bid = (await r.json())["id"]
            async with http.post(f"{base}/api/v1/boards/{bid}/columns", json={"title": "c"}) as r:
                col = (await r.json())["id"]
            # Viewers until both processes have some: every one of them sees every command.
            clients: list[WsClient] = []
            for _ in range(12):
                ws = await WsClient.connect(http, f"ws://127.0.0.1:{port}/ws", "json")
                await ws.join(bid)
                clients.append(ws)
            async with http.get(f"{base}/health") as r:
                assert (await r.json())["status"] == "ok"
            for i, ws in enumerate(clients):
                answer = await ws.cmd(bid, {"op": "card.create", "column_id": col, "title": f"c{i}"})
                assert answer["type"] == "ack", answer
            last = 2 + len(clients) - 1  # the column, then one card each
            for ws in clients:
                await ws.wait_seq(bid, last)
            owned = 0
            for node in nodes:
                # each child's /health, reached through the shared port until it answers
                for _ in range(100):
                    async with aiohttp.ClientSession() as h2, h2.get(f"{base}/health") as r:
                        body = await r.json()
                    if body["node"]["id"] == node:
                        owned += body["node"]["boards_owned"]
                        break
            assert owned == 1  # the board lives in exactly one of them
            for ws in clients:
                await ws.close()

        # A child that dies is started again by the parent.
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(20):
            while True:
                now = await _node_ids(base, 2, tries=50)
                if len(now) == 2 and victim not in {_pid(n) for n in now}:
                    break
                await asyncio.sleep(0.2)
        survivors = {_pid(n) for n in now}
    finally:
        parent.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(parent.wait(), 30)
    assert code == 0
    for pid in survivors:  # every child stopped with the parent
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
