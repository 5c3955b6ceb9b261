"""JSON logs are one JSON object per line, whoever logs: Boardcast itself, aiohttp's server
(a malformed request, logged with its traceback) and asyncpg's pool (PostgreSQL gone away)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.test_health_metrics import relayed_postgres
from tests.test_newcomer import boardcast_cmd

pytestmark = pytest.mark.timeout(90)

Line = dict[str, Any]


class StderrLines:
    """Collects a process's stderr line by line; a test waits for the line it expects."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.raw: list[bytes] = []
        self._stream = stream
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self._stream.readline():
            async with self._changed:
                self.raw.append(line)
                self._changed.notify_all()
        async with self._changed:
            self.raw.append(b"")  # end of stream
            self._changed.notify_all()

    def _parsed(self) -> list[Line]:
        out = []
        for raw in self.raw:
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
        return out

    async def wait_for(self, wanted: Callable[[Line], bool], timeout_s: float = 30) -> Line:
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                found = [line for line in self._parsed() if wanted(line)]
                if found:
                    return found[0]
                assert b"" not in self.raw, "stderr ended:\n" + b"".join(self.raw).decode()
                await self._changed.wait()


async def test_every_stderr_line_is_json_including_aiohttp_and_asyncpg(database_url, redis_url, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with relayed_postgres(database_url) as (url, relay):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
        env.update(
            BOARDCAST_ENV="production",  # JSON by default
            BOARDCAST_SECRET="a-json-logs-test-secret-0123456789abcdef",
            BOARDCAST_HOST="127.0.0.1",
            BOARDCAST_PORT=str(port),
            DATABASE_URL=url,
            REDIS_URL=redis_url,
        )
        proc = await asyncio.create_subprocess_exec(
            *boardcast_cmd(), "serve", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        lines = StderrLines(proc.stderr)
        try:
            await lines.wait_for(lambda line: line.get("event") == "listening")
            async with aiohttp.ClientSession() as http:
                await _wait_live(http, base, proc)

                # aiohttp logs a malformed request with its traceback
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
                await writer.drain()
                assert b" 400 Bad Request" in (await reader.read()).split(b"\r\n", 1)[0]
                writer.close()
                await writer.wait_closed()
                aio = await lines.wait_for(lambda line: line.get("logger") == "aiohttp.server")
                assert aio["level"] == "error" and "Traceback" in aio["exception"]

                # PostgreSQL goes away: asyncpg's pool fails to reconnect and says so
                await relay.cut()
                async with http.get(f"{base}/health") as r:
                    assert r.status == 503
                pg = await lines.wait_for(lambda line: str(line.get("logger", "")).startswith("asyncpg"))
                assert pg["level"] == "warning" and "exception" in pg
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
            await lines.task
    text = [raw for raw in lines.raw if raw]
    assert len(text) >= 4
    for raw in text:
        line = json.loads(raw)  # every line, not just ours
        assert {"event", "level", "timestamp"} <= set(line), line


async def _wait_live(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process) -> None:
    """The server logs "listening" before it binds; its port is polled until it answers."""
    async with asyncio.timeout(30):
        while True:
            assert proc.returncode is None, "serve exited early"
            try:
                async with http.get(f"{base}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)  # a starting process gives no event to wait on
