"""Several real `boardcast serve` nodes on 127.0.0.1 for the multi-node tests, and a Redis
server of the test's own.

Each node is one OS process with its own port, working folder and log file (a new
``serve-N.log`` per start, so a restarted node keeps its earlier logs). A test can kill one
(``kill -9``), pause and resume it (SIGSTOP / SIGCONT), stop it gracefully (SIGTERM, the
hand-off) and start it again on the same port, read its ``/health`` and find which node owns a
board (the lease key in Redis names the owner's node id, which each node's ``/health`` shows).

:class:`RedisServer` runs ``redis-server`` on a free port with no persistence, so a test can
kill and restart it under load without touching the machine's Redis (or another session's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tests.conftest import free_port
from tests.test_newcomer import boardcast_cmd, open_log

# Development mode: no auth, no REST limits, WebSocket commands limited far above any storm.
CORE_ENV = {
    "BOARDCAST_AUTH": "none",
    "BOARDCAST_RATE_LIMIT": "off",
    "BOARDCAST_RATE_WS_COMMANDS": "100000/1",
}
# Real accounts (tests/identity.py): JWT auth with the fast password hash.
JWT_ENV = {"BOARDCAST_AUTH": "jwt", "BOARDCAST_PASSWORD_HASH_PROFILE": "fast", "BOARDCAST_RATE_LIMIT": "off"}

_START_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parents[1]


def log_tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Node:
    """One `boardcast serve` process (or the place of one that was killed or stopped)."""

    index: int
    port: int
    workdir: Path
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    node_id: str = ""  # from /health, for the running process
    paused: bool = False
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, http: aiohttp.ClientSession) -> None:
        assert not self.running, f"node {self.index} is already running"
        log = open_log(self.workdir)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *boardcast_cmd(),
                "serve",
                env={**self.env, "BOARDCAST_PORT": str(self.port)},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(log)
        self.starts += 1
        self.paused = False
        await self.wait_healthy(http)

    async def wait_healthy(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """Poll /health until it answers 200 (a starting process has no event to await),
        failing at once with the log if the process exits."""
        async with asyncio.timeout(_START_TIMEOUT_S):
            while True:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(
                        f"node {self.index} exited with {self.proc.returncode}:\n{log_tail(self.log())}"
                    )
                try:
                    body = await self.health(http)
                    if body.get("node", {}).get("id"):
                        self.node_id = body["node"]["id"]
                        return body
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.base}/health", timeout=aiohttp.ClientTimeout(total=3)) as r:
            body: dict[str, Any] = await r.json()
            return body

    def log(self) -> str:
        """Every log this node wrote, all starts, in order."""
        files = sorted(self.workdir.glob("serve-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        return "".join(f.read_text(errors="replace") for f in files)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.returncode is None, f"node {self.index} is not running"
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """kill -9: no hand-off, no goodbye; its lease and heartbeat expire on their own."""
        self._signal(signal.SIGKILL)
        assert self.proc is not None
        await self.proc.wait()
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    async def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (the graceful hand-off); its exit code."""
        self._signal(signal.SIGTERM)
        assert self.proc is not None
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()

    async def restart(self, http: aiohttp.ClientSession) -> int:
        """SIGTERM, wait, start again on the same port; the old process's exit code."""
        code = await self.terminate()
        await self.start(http)
        return code


@dataclass
class Nodes:
    nodes: list[Node]
    http: aiohttp.ClientSession
    redis: aioredis.Redis | RedisCluster
    prefix: str
    exits: list[tuple[int, int]] = field(default_factory=list)  # (node, code) of graceful stops

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.running and not n.paused]

    async def lease(self, board_id: str) -> tuple[int, str] | None:
        """(epoch, node id) of the board's lease in Redis, or None if nobody holds it."""
        raw = await self.redis.get(f"{self.prefix}:{{b:{uuid.UUID(board_id)}}}:lease")
        if raw is None:
            return None
        epoch, node_id = raw.decode().split(":", 1)
        return int(epoch), node_id

    async def owner(self, board_id: str, timeout_s: float = 10.0) -> Node:
        """The running node that holds the board's lease (waiting until one does)."""
        async with asyncio.timeout(timeout_s):
            while True:
                held = await self.lease(board_id)
                if held is not None:
                    for n in self.nodes:
                        if n.running and n.node_id == held[1]:
                            return n
                await asyncio.sleep(0.05)  # a lease is claimed by another process: polled

    def logs(self) -> str:
        return "\n".join(f"===== node {n.index} =====\n{log_tail(n.log(), 60)}" for n in self.nodes)

    async def terminate(self, n: Node) -> None:
        self.exits.append((n.index, await n.terminate()))

    async def restart(self, n: Node) -> None:
        await self.terminate(n)
        await n.start(self.http)


def node_env(
    database_url: str, redis_url: str, prefix: str, tmp_path: Path, extra: dict[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    # The code under test is this checkout's: the venv's `boardcast` script would otherwise
    # import the package wherever it was installed from (an editable install of another tree).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        BOARDCAST_HOST="127.0.0.1",
        BOARDCAST_DATA_DIR=str(tmp_path / "data"),  # unused (both URLs are set); never the repo's
        BOARDCAST_REDIS_PREFIX=prefix,
        BOARDCAST_LOG_LEVEL="info",
        **CORE_ENV,
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def start_nodes(
    count: int,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    prefix: str,
    extra_env: dict[str, str] | None = None,
    *,
    redis_cluster: bool = False,
) -> AsyncIterator[Nodes]:
    """``count`` nodes sharing the database, Redis and key ``prefix``, each answering /health
    when this yields. At the end every node still running is stopped with SIGTERM and must
    exit 0 with no traceback in its logs (a node the test killed is left as it is); every key
    under ``prefix`` is deleted."""
    extra = dict(extra_env or {})
    if redis_cluster:
        extra["BOARDCAST_REDIS_CLUSTER"] = "on"
    env = node_env(database_url, redis_url, prefix, tmp_path, extra)
    client: aioredis.Redis | RedisCluster = (
        RedisCluster.from_url(redis_url) if redis_cluster else aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
    )
    nodes: list[Node] = []
    http = aiohttp.ClientSession()
    try:
        for i in range(count):
            workdir = tmp_path / f"node{i}"
            workdir.mkdir()
            nodes.append(Node(i, free_port(), workdir, env))
        # all at once (migrations run under an advisory lock)
        await asyncio.gather(*(n.start(http) for n in nodes))
        cluster = Nodes(nodes, http, client, prefix)
        yield cluster
        for n in nodes:
            if n.paused:
                n.resume()
        codes = await asyncio.gather(*(n.terminate() for n in nodes if n.running))
        stops = [*codes, *(c for _, c in cluster.exits)]
        assert all(c == 0 for c in stops), (codes, cluster.exits, cluster.logs())
        for n in nodes:
            assert "Traceback" not in n.log(), f"node {n.index}:\n{n.log()[-6000:]}"
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.returncode is None:
                if n.paused:
                    n.proc.send_signal(signal.SIGCONT)
                n.proc.kill()
                await n.proc.wait()
        await http.close()
        with contextlib.suppress(Exception):
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            for k in keys:  # one at a time: on a cluster the keys live in different slots
                await client.delete(k)
        await client.aclose()


class RedisServer:
    """A ``redis-server`` of the test's own on a free 127.0.0.1 port, no persistence: killed
    and restarted on the same port, it comes back empty (as a Redis that lost its data)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self._binary = binary
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.folder), "--logfile", "redis.log",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.from_url(self.url)  # type: ignore[no-untyped-call]
        try:
            deadline = time.monotonic() + 10
            while True:  # another process starting: polled
                try:
                    if await client.ping():
                        return
                except (aioredis.ConnectionError, OSError):
                    pass
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise AssertionError(f"redis-server on {self.port} did not start")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """kill -9: everything it held is gone (no persistence)."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a partition, a stalled VM)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def restart(self) -> None:
        """Killed and started again, empty, on the same port."""
        await self.kill()
        await self.start()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def own_redis(folder: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(folder)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
