"""Actor and connection lifecycles: passivation, supervision after a crash, heartbeats."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from actors import GetSnapshot
from actors.state import BoardState
from server.keys import REGISTRY
from storage import BoardRepo
from tests.conftest import create_board, create_column
from tests.wsclient import WsClient


async def _health(http: aiohttp.ClientSession, base: str) -> dict:
    async with http.get(f"{base}/health") as r:
        return await r.json()


async def test_an_idle_board_without_viewers_is_passivated_and_reactivates(http, start_server):
    srv = await start_server(passivate_s=0.3)
    board = await create_board(http, srv.base)
    col = await create_column(http, srv.base, board["id"])
    assert (await _health(http, srv.base))["boards_active"] == 1
    stopped = asyncio.Event()
    srv.app[REGISTRY].get(uuid.UUID(board["id"])).on_stopped(lambda _actor: stopped.set())
    async with asyncio.timeout(10):
        await stopped.wait()
    assert (await _health(http, srv.base))["boards_active"] == 0
    # Reactivated from Postgres on the next use, with its state intact.
    async with http.get(f"{srv.base}/api/v1/boards/{board['id']}") as r:
        snap = await r.json()
    assert [c["id"] for c in snap["columns"]] == [col["id"]] and snap["seq"] == 1


async def test_a_board_with_a_viewer_is_not_passivated(http, start_server):
    srv = await start_server(passivate_s=0.2)
    board = await create_board(http, srv.base)
    viewer = await WsClient.connect(http, srv.ws_url)
    try:
        await viewer.join(board["id"])
        await asyncio.sleep(0.8)  # four passivation periods
        assert (await _health(http, srv.base))["boards_active"] == 1
        pong = await viewer.request({"type": "ping"})
        assert pong["type"] == "pong"
    finally:
        await viewer.close()


async def test_a_crashing_command_fails_alone_and_the_board_carries_on(http, server, connect, monkeypatch):
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    original = BoardState.apply

    def apply(self, cmd, *args):  # a bug that only some commands hit
        if getattr(cmd, "title", None) == "crash":
            raise RuntimeError("simulated bug")
        return original(self, cmd, *args)

    monkeypatch.setattr(BoardState, "apply", apply)
    a = await connect()
    b = await connect("json")
    await a.join(board["id"])
    await b.join(board["id"])
    err = await a.cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": "crash"})
    assert err["type"] == "error" and err["code"] == "internal"
    ok = await a.cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": "fine"})
    assert ok["type"] == "ack" and ok["seq"] == 2
    evs = await b.wait_seq(board["id"], 2)
    assert [e["seq"] for e in evs] == [2] and evs[0]["event"]["card"]["title"] == "fine"
    async with http.get(f"{server.base}/api/v1/boards/{board['id']}") as r:
        snap = await r.json()
    assert [c["title"] for c in snap["cards"]] == ["fine"]


async def test_a_connection_that_answers_no_ping_is_closed_with_4001(http, start_server):
    srv = await start_server(heartbeat_s=0.2, idle_timeout_s=0.5)
    board = await create_board(http, srv.base)
    # autoping=False: this client never answers the server's pings.
    silent = await WsClient.connect(http, srv.ws_url, autoping=False)
    alive = await WsClient.connect(http, srv.ws_url)
    try:
        await silent.join(board["id"])
        await alive.join(board["id"])
        async with asyncio.timeout(10):
            await silent.closed.wait()
        assert silent.ws.close_code == 4001
        # The responsive client outlived several idle timeouts and still works.
        await asyncio.sleep(1.0)
        assert (await alive.request({"type": "ping"}))["type"] == "pong"
    finally:
        await silent.close()
        await alive.close()


async def test_shutdown_closes_connections_with_1001_and_acknowledged_work_survives(http, start_server):
    srv = await start_server()
    board = await create_board(http, srv.base)
    col = await create_column(http, srv.base, board["id"])
    client = await WsClient.connect(http, srv.ws_url)
    try:
        await client.join(board["id"])
        ack = await client.cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": "kept"})
        assert ack["type"] == "ack"
        await srv.stop()
        async with asyncio.timeout(15):
            await client.closed.wait()
        assert client.ws.close_code == 1001
    finally:
        await client.close()
    again = await start_server()
    async with http.get(f"{again.base}/api/v1/boards/{board['id']}") as r:
        snap = await r.json()
    assert [c["title"] for c in snap["cards"]] == ["kept"] and snap["seq"] == ack["seq"]


async def test_a_nul_character_is_refused_before_it_can_fail_a_group_commit(http, server, connect):
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    a = await connect()
    await a.join(board["id"])
    rids = ["ok-1", "nul", "ok-2"]
    for rid, title in zip(rids, ["one", "x\x00y", "two"], strict=True):
        await a.send_cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": title}, rid)
    answers = await a.wait_answers(rids, timeout=10)
    assert answers["nul"]["type"] == "error" and answers["nul"]["code"] == "bad_request"
    assert answers["ok-1"]["type"] == "ack" and answers["ok-2"]["type"] == "ack"
    async with http.post(
        f"{server.base}/api/v1/boards/{board['id']}/cards", json={"column_id": col["id"], "title": "a\x00"}
    ) as r:
        assert r.status == 400


async def test_a_failed_rejoin_leaves_no_subscriber_behind(http, server, connect):
    board = await create_board(http, server.base)
    a = await connect()
    await a.join(board["id"])
    err = await a.join(board["id"], since_seq=999)
    assert err["type"] == "error" and err["code"] == "bad_request"
    actor = server.app[REGISTRY].get(uuid.UUID(board["id"]))
    await actor.ask(GetSnapshot(), 5)  # queued after the connection's Unsubscribe
    assert actor.subscriber_count() == 0
    # and the connection is not joined any more
    refused = await a.cmd(board["id"], {"op": "column.create", "title": "x"})
    assert refused["code"] == "not_joined"


async def test_a_commit_whose_outcome_was_lost_is_recovered_and_acknowledged(
    http, server, connect, monkeypatch
):
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    original = BoardRepo.persist

    async def persist_then_lose_the_reply(self, batch):
        await original(self, batch)
        raise ConnectionResetError("connection lost after COMMIT")

    monkeypatch.setattr(BoardRepo, "persist", persist_then_lose_the_reply)
    a = await connect()
    b = await connect("json")
    await a.join(board["id"])
    await b.join(board["id"])
    ack = await a.cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": "durable"})
    assert ack["type"] == "ack" and ack["seq"] == 2
    evs = await b.wait_seq(board["id"], 2)
    assert evs[-1]["event"]["card"]["title"] == "durable"


async def test_a_crash_keeps_the_commands_queued_behind_it(http, server, connect, monkeypatch):
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    original = BoardState.apply

    def apply(self, cmd, *args):
        if getattr(cmd, "title", None) == "crash":
            raise RuntimeError("simulated bug")
        return original(self, cmd, *args)

    monkeypatch.setattr(BoardState, "apply", apply)
    a = await connect()
    await a.join(board["id"])
    for rid, title in (("before", "one"), ("crash", "crash"), ("after", "two")):
        await a.send_cmd(board["id"], {"op": "card.create", "column_id": col["id"], "title": title}, rid)
    answers = await a.wait_answers(["before", "crash", "after"], timeout=10)
    assert answers["crash"]["code"] == "internal"
    assert answers["after"]["type"] == "ack"
    async with http.get(f"{server.base}/api/v1/boards/{board['id']}") as r:
        snap = await r.json()
    titles = [c["title"] for c in snap["cards"]]
    assert "two" in titles and "crash" not in titles
    # "before" shared the crashed batch or not: acked exactly when it is on the board
    assert (answers["before"]["type"] == "ack") == ("one" in titles)


async def test_a_commit_whose_outcome_cannot_be_read_is_not_called_failed(http, server, connect, monkeypatch):
    """The reply to the commit is lost and the reload fails too (Postgres gone): the sender
    is told the outcome is unknown, never that nothing was applied; a retry with the same rid
    is then answered by what the log holds."""
    board = await create_board(http, server.base)
    col = await create_column(http, server.base, board["id"])
    persist, load = BoardRepo.persist, BoardRepo.load_board
    broken = {"load": 0}

    async def persist_then_lose_the_reply(self, batch):
        await persist(self, batch)
        broken["load"] = 1
        raise ConnectionResetError("connection lost after COMMIT")

    async def load_board(self, *args):
        if broken["load"]:
            broken["load"] -= 1
            raise ConnectionRefusedError("PostgreSQL is down")
        return await load(self, *args)

    monkeypatch.setattr(BoardRepo, "persist", persist_then_lose_the_reply)
    monkeypatch.setattr(BoardRepo, "load_board", load_board)
    a = await connect()
    await a.join(board["id"])
    op = {"op": "card.create", "column_id": col["id"], "title": "stored after all"}
    first = await a.cmd(board["id"], op, rid="unsure")
    assert (first["type"], first["code"]) == ("error", "unavailable"), first
    assert "unknown" in first["message"] and "nothing was applied" not in first["message"]
    monkeypatch.setattr(BoardRepo, "persist", persist)
    await a.join(board["id"])  # the board may have restarted or stopped: join it again
    retry = await a.cmd(board["id"], op, rid="unsure")
    assert (retry["type"], retry.get("duplicate")) == ("ack", True), retry
