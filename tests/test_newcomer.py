"""The newcomer's way: `boardcast serve` and `boardcast migrate` on a machine with no
DATABASE_URL or REDIS_URL, as real processes using embedded PostgreSQL and Redis under a data
folder, and nothing left running once they stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.conftest import free_port
from tests.identity import register, ws_url_with_token
from tests.wsclient import WsClient

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A folder for the embedded servers' data, outside pytest's tmp tree: run as root,
    pgserver runs PostgreSQL as an unprivileged user that must traverse every parent folder,
    and any pytest session starting meanwhile resets /tmp/pytest-of-<user> to mode 0700."""
    path = Path(tempfile.mkdtemp(prefix="boardcast-newcomer-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


def boardcast_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("boardcast")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


def newcomer_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This machine's environment as a newcomer has it: no database URLs, no Boardcast
    settings except the ones given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(BOARDCAST_DATA_DIR=str(data_dir), **extra)
    return env


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Processes that belong to the data folder: started with it on their command line (the
    embedded PostgreSQL) or running inside it (the embedded Redis)."""
    root = str(data_dir)
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status", "name"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        cwd = p.info["cwd"] or ""
        if root in cmd or cwd == root or cwd.startswith(root + os.sep):
            found.append(p)
    return found


def kill_leftovers(data_dir: Path) -> None:
    """Last resort after a failed test: stop what the test's server left behind."""
    procs = processes_of(data_dir)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


async def wait_healthy(
    proc: asyncio.subprocess.Process, base: str, http: aiohttp.ClientSession, tmp_path: Path
) -> dict:
    """Wait for a starting process: poll /health until it answers 200, bounded by a deadline,
    failing at once if the process exits."""
    async with asyncio.timeout(120):
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"serve exited early with {proc.returncode}:\n{last_log(tmp_path)}")
            try:
                async with http.get(f"{base}/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        body: dict = await r.json()
                        return body
            except aiohttp.ClientConnectionError:
                pass
            # a process starting up gives no event to wait on; poll its port gently
            await asyncio.sleep(0.2)


def open_log(tmp_path: Path) -> int:
    """A new serve-N.log for each start, so a restart keeps the first run's log."""
    n = len(list(tmp_path.glob("serve-*.log"))) + 1
    return os.open(tmp_path / f"serve-{n}.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def last_log(tmp_path: Path) -> str:
    logs = sorted(tmp_path.glob("serve-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    return logs[-1].read_text()


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, data_dir: Path, port: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    env = newcomer_env(data_dir, BOARDCAST_PORT=str(port), BOARDCAST_HOST="127.0.0.1")
    log = open_log(tmp_path)
    try:
        proc = await asyncio.create_subprocess_exec(
            *boardcast_cmd(), "serve", env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        os.close(log)
    try:
        yield proc, data_dir
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        kill_leftovers(data_dir)


async def test_serve_with_no_urls_runs_embedded_databases_and_stops_them_on_sigterm(tmp_path, data_root):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        serving(tmp_path, data_root / "data", port) as (proc, data_dir),
        aiohttp.ClientSession() as http,
    ):
        health = await wait_healthy(proc, base, http, tmp_path)
        assert health["postgres"]["ok"] is True and health["redis"]["ok"] is True
        assert (data_dir / "postgres" / "PG_VERSION").exists()

        # A newcomer's server asks for credentials like any other: sign up first.
        async with http.get(f"{base}/api/v1/boards") as r:
            assert r.status == 401
        me = await register(http, base)
        async with http.post(
            f"{base}/api/v1/boards", json={"title": "My first board"}, headers=me.headers
        ) as r:
            assert r.status == 201, await r.text()
            board = await r.json()
        ws_url = ws_url_with_token(f"ws://127.0.0.1:{port}/ws", me.access_token)
        client = await WsClient.connect(http, ws_url, "json")
        joined = await client.join(board["id"])
        assert joined["type"] == "joined" and joined["seq"] == 0
        ack = await client.cmd(board["id"], {"op": "column.create", "title": "Todo"})
        assert ack["type"] == "ack" and ack["seq"] == 1
        ev = (await client.wait_seq(board["id"], 1))[-1]
        assert ev["event"]["kind"] == "column.created" and ev["event"]["column"]["title"] == "Todo"

        # the embedded servers are running, found by their data folder
        embedded = processes_of(data_dir)
        names = " ".join((p.info["name"] or "?") for p in embedded)
        assert "postgres" in names and "valkey" in names, [p.cmdline() for p in embedded]

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await proc.wait()
        await client.close()
        log = last_log(tmp_path)
        assert code == 0, log
        assert "Traceback" not in log, log

        # nothing of it is left running
        _, alive = psutil.wait_procs(embedded, timeout=15)
        assert alive == [], [p.cmdline() for p in alive]
        assert processes_of(data_dir) == []


async def test_sigterm_while_the_embedded_servers_start_leaves_nothing_running(tmp_path, data_root):
    data_dir = data_root / "data"
    async with serving(tmp_path, data_dir, free_port()) as (proc, _):
        # the moment PostgreSQL is up, before Redis and the app: the process is still starting
        async with asyncio.timeout(120):
            while not any("postgres" in (p.info["name"] or "") for p in processes_of(data_dir)):
                assert proc.returncode is None, last_log(tmp_path)
                await asyncio.sleep(0.01)  # waiting for another process to appear
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await proc.wait()
        # stopped as asked: 0 if the server had started serving, 128 + SIGTERM if not yet
        assert code in (0, 128 + signal.SIGTERM), (code, last_log(tmp_path))
        psutil.wait_procs(processes_of(data_dir), timeout=15)
        assert processes_of(data_dir) == [], [p.cmdline() for p in processes_of(data_dir)]


async def test_serve_keeps_its_data_across_a_restart(tmp_path, data_root):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with serving(tmp_path, data_root / "data", port) as (proc, _):
            await wait_healthy(proc, base, http, tmp_path)
            me = await register(http, base)
            async with http.post(f"{base}/api/v1/boards", json={"title": "Kept"}, headers=me.headers) as r:
                board = await r.json()
            async with http.post(
                f"{base}/api/v1/boards/{board['id']}/columns", json={"title": "Col"}, headers=me.headers
            ) as r:
                assert r.status == 201
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                assert await proc.wait() == 0
        async with serving(tmp_path, data_root / "data", port) as (proc, data_dir):
            await wait_healthy(proc, base, http, tmp_path)
            # the account and its session survive the restart too
            async with http.get(f"{base}/api/v1/boards/{board['id']}", headers=me.headers) as r:
                assert r.status == 200
                snap = await r.json()
            assert snap["title"] == "Kept" and [c["title"] for c in snap["columns"]] == ["Col"]
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                assert await proc.wait() == 0
            psutil.wait_procs(processes_of(data_dir), timeout=15)
            assert processes_of(data_dir) == []


def test_migrate_with_no_urls_uses_an_embedded_database(tmp_path, data_root):
    data_dir = data_root / "data"
    env = newcomer_env(data_dir)
    try:
        first = subprocess.run(
            [*boardcast_cmd(), "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert first.returncode == 0, first.stderr
        assert "migrations_done" in first.stderr and "applied=[1" in first.stderr, first.stderr
        assert (data_dir / "postgres" / "PG_VERSION").exists()
        assert processes_of(data_dir) == [], "migrate left its embedded database running"

        again = subprocess.run(
            [*boardcast_cmd(), "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert again.returncode == 0, again.stderr
        assert "applied=[]" in again.stderr, again.stderr
        # migrate needs no Redis: none was started
        assert not (data_dir / "redis").exists()
        assert processes_of(data_dir) == []
    finally:
        kill_leftovers(data_dir)
