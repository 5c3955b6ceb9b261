"""`boardcast watch BOARD_ID`, the README tour's watcher: a real process following a real
server over the JSON subprotocol, one readable line per event."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory, free_port
from tests.identity import Account, new_board, register
from tests.test_newcomer import boardcast_cmd

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def jwt_server(start_server: ServerFactory) -> RunningServer:
    return await start_server(auth="jwt")


class Watcher:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def next_line(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):
            raw = await self.proc.stdout.readline()
        assert raw, f"watch exited: {self.lines}"
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line


@pytest.fixture
async def watch() -> AsyncIterator[object]:
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> Watcher:
        proc = await asyncio.create_subprocess_exec(
            *boardcast_cmd(), "watch", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        started.append(proc)
        return Watcher(proc)

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def rest(http: aiohttp.ClientSession, method: str, url: str, who: Account, body: object = None) -> dict:
    async with http.request(method, url, json=body, headers=who.headers) as r:
        assert r.status in (200, 201, 204), await r.text()
        return {} if r.status == 204 else dict(await r.json())


async def test_watch_prints_one_line_per_event_with_author_kind_and_summary(jwt_server, http, watch):
    base = jwt_server.base
    ann = await register(http, base, name="Ann")
    board = await new_board(http, base, ann, title="Launch")
    b = f"{base}/api/v1/boards/{board['id']}"
    todo = await rest(http, "POST", f"{b}/columns", ann, {"title": "Todo"})

    w = await watch(board["id"], "--token", ann.access_token, "--url", jwt_server.ws_url)
    assert await w.next_line() == "joined 'Launch' at seq 1: 1 columns, 0 cards, 1 viewing"

    done = await rest(http, "POST", f"{b}/columns", ann, {"title": "Done"})
    card = await rest(http, "POST", f"{b}/cards", ann, {"column_id": todo["id"], "title": "Write the README"})
    await rest(http, "POST", f"{b}/cards/{card['id']}/move", ann, {"column_id": done["id"]})
    await rest(http, "PATCH", f"{b}/cards/{card['id']}", ann, {"description": "with the watcher"})
    await rest(http, "DELETE", f"{b}/cards/{card['id']}", ann)
    assert [await w.next_line() for _ in range(5)] == [
        '#2 Ann column.created "Done"',
        '#3 Ann card.created "Write the README" in "Todo"',
        '#4 Ann card.moved "Write the README" to "Done"',
        '#5 Ann card.updated "Write the README" description="with the watcher"',
        '#6 Ann card.deleted "Write the README"',
    ]

    # Ctrl-C ends it quietly
    w.proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):
        _, err = await w.proc.communicate()
    assert w.proc.returncode == 0, err.decode()
    assert b"Traceback" not in err, err.decode()


async def test_watch_takes_the_token_from_the_environment_and_shows_other_viewers(jwt_server, http, watch):
    import os

    base = jwt_server.base
    ann = await register(http, base, name="Ann")
    board = await new_board(http, base, ann, title="Env")
    env = {**os.environ, "BOARDCAST_TOKEN": ann.access_token}
    w = await watch(board["id"], "--url", jwt_server.ws_url, env=env)
    assert (await w.next_line()).startswith("joined 'Env' at seq 0")
    # a second viewer (another watcher, same user) appears in presence
    other = await watch(board["id"], "--url", jwt_server.ws_url, env=env)
    await other.next_line()
    assert await w.next_line() == "+ Ann is viewing"


async def test_watch_with_a_bad_token_or_no_server_stops_with_one_line(jwt_server, http, watch):
    board_id = "00000000-0000-4000-8000-000000000000"
    w = await watch(board_id, "--token", "not-a-token", "--url", jwt_server.ws_url)
    async with asyncio.timeout(20):
        out, err = await w.proc.communicate()
    assert w.proc.returncode == 1 and out == b""
    assert err.decode().count("\n") == 1, err.decode()
    assert err.startswith(b"boardcast watch: ") and b"401" in err and b"--token" in err, err

    w = await watch(board_id, "--url", f"ws://127.0.0.1:{free_port()}/ws")
    async with asyncio.timeout(20):
        out, err = await w.proc.communicate()
    assert w.proc.returncode == 1 and err.decode().count("\n") == 1, err.decode()
    assert b"cannot connect" in err and b"boardcast serve" in err, err


async def test_watch_of_a_board_the_user_cannot_see_says_so(jwt_server, http, watch):
    base = jwt_server.base
    ann = await register(http, base, name="Ann")
    bob = await register(http, base, name="Bob")
    board = await new_board(http, base, ann, title="Private")
    w = await watch(board["id"], "--token", bob.access_token, "--url", jwt_server.ws_url)
    async with asyncio.timeout(20):
        _, err = await w.proc.communicate()
    assert w.proc.returncode == 1, err.decode()
    assert err.startswith(b"boardcast watch: refused: ") and err.count(b"\n") == 1, err.decode()
