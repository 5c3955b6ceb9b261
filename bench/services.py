"""What the bench starts and must stop: its database, server processes and load workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psutil

from bench.common import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# The settings every ``boardcast serve`` of the bench starts with, whatever the caller's
# environment says. The scenarios measure the realtime core, as they did before sign-in and
# rate limits existed, so: no credentials (everyone is the development user), no REST rate
# limits, and a WebSocket command limit no writer reaches (the default of 100/s per connection
# would otherwise be what fanout and commands measure). ``auth_overhead`` overrides them for
# the server it measures with authentication and limits on.
CORE_SETTINGS = {
    "BOARDCAST_AUTH": "none",
    "BOARDCAST_RATE_LIMIT": "off",
    "BOARDCAST_RATE_WS_COMMANDS": "1000000/1",
}
# Redis key prefixes the bench gives servers (BOARDCAST_REDIS_PREFIX); only keys under such a
# prefix are ever deleted.
BENCH_REDIS_PREFIX = "bcbench"


class BenchError(Exception):
    pass


# ------------------------------------------------------------------ database


@contextlib.asynccontextmanager
async def _pg(url: str) -> AsyncIterator[Any]:
    """One asyncpg connection, closed at the end of the block."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


def with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


async def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh database ``boardcast_bench_<random>``; returns (name, url)."""
    name = f"boardcast_bench_{uuid.uuid4().hex[:10]}"
    async with _pg(admin_url) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    url = with_db(admin_url, name)
    async with _pg(url) as conn:
        await conn.execute(
            """CREATE TABLE bench_single_insert (
                   id bigserial PRIMARY KEY, board_id uuid NOT NULL, seq bigint NOT NULL,
                   body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"""
        )
    return name, url


async def drop_database(admin_url: str, name: str) -> None:
    assert name.startswith("boardcast_bench_"), name  # only ever the one this run created
    async with _pg(admin_url) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def postgres_version(url: str) -> str:
    async with _pg(url) as conn:
        return str(await conn.fetchval("SHOW server_version"))


# ------------------------------------------------------------------ Redis


def bench_redis_prefix() -> str:
    """A BOARDCAST_REDIS_PREFIX of this run's own: ``bcbench<random>``."""
    return f"{BENCH_REDIS_PREFIX}{uuid.uuid4().hex[:10]}"


async def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete the keys a server wrote under ``prefix`` (never anything else: no FLUSH);
    returns how many there were."""
    import redis.asyncio as aioredis

    assert prefix.startswith(BENCH_REDIS_PREFIX) and prefix.isalnum(), prefix  # no glob characters
    client = aioredis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


# ------------------------------------------------------------------ processes


async def _spawn(cmd: list[str], log_path: Path, **kwargs: Any) -> asyncio.subprocess.Process:
    """Start ``cmd`` in the repository, in a session of its own (a Ctrl-C reaches the bench,
    which stops it in order), with stderr appended to ``log_path`` (and stdout too unless
    ``kwargs`` says otherwise)."""
    log = log_path.open("ab")
    kwargs.setdefault("stdout", log)
    try:
        return await asyncio.create_subprocess_exec(
            *cmd, cwd=REPO_ROOT, stderr=log, start_new_session=True, **kwargs
        )
    finally:
        log.close()


async def _terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _log_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


# ------------------------------------------------------------------ server processes


class ServerProcess:
    """``boardcast serve`` or the baseline server, on a free 127.0.0.1 port."""

    def __init__(
        self, kind: str, log_path: Path, settings: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        """``settings``: BOARDCAST_* variables over :data:`CORE_SETTINGS`, ``args`` after
        ``boardcast serve`` (Boardcast only)."""
        self.kind = kind
        self.args = args
        self.settings = {**CORE_SETTINGS, **(settings or {})} if kind == "boardcast" else {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log_offset = 0
        self._ps: psutil.Process | None = None

    async def start(self, env: dict[str, str], outbound_queue: int) -> None:
        if self.kind == "boardcast":
            python = server_python()
            exe = Path(python).parent / "boardcast"
            cmd = [str(exe), "serve"] if exe.exists() else [python, "-m", "server.cli", "serve"]
            cmd += self.args
            full_env = {
                **env,
                **self.settings,
                "BOARDCAST_PORT": str(self.port),
                "BOARDCAST_HOST": "127.0.0.1",
                "BOARDCAST_LOG_LEVEL": "warning",
                "BOARDCAST_LOG_FORMAT": "json",
                # the code of this checkout, whichever checkout the interpreter's editable
                # install points at (`serve --processes` children inherit it)
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
            }
        else:
            cmd = [
                sys.executable,
                "-m",
                "bench.baseline_server",
                "--port",
                str(self.port),
                "--outbound-queue",
                str(outbound_queue),
            ]
            full_env = dict(env)
        self.proc = await _spawn(cmd, self.log_path, env=full_env, stdin=subprocess.DEVNULL)
        self._ps = psutil.Process(self.proc.pid)
        await self._wait_healthy(timeout=60)

    async def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise BenchError(
                        f"{self.kind} server exited with {self.proc.returncode}: {self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with s.get(f"{self.base}/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise BenchError(f"{self.kind} server not healthy after {timeout}s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's process and its children (the nodes of ``serve --processes N``)."""
        assert self._ps is not None
        with contextlib.suppress(psutil.Error):
            return [self.pid, *(c.pid for c in self._ps.children(recursive=True))]
        return [self.pid]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def rss(self) -> int:
        assert self._ps is not None
        return int(self._ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        assert self._ps is not None
        t = self._ps.cpu_times()
        return float(t.user + t.system)

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base}/health") as r:
            body: dict[str, Any] = await r.json()
            return body

    async def metrics(self) -> dict[str, float]:
        """Boardcast's Prometheus samples as {"name{labels}": value} (empty for the baseline,
        and for ``--processes``, whose port answers from whichever child the kernel picks)."""
        if self.kind != "boardcast" or "--processes" in self.args:
            return {}
        from prometheus_client.parser import text_string_to_metric_families

        async with aiohttp.ClientSession() as s, s.get(f"{self.base}/metrics") as r:
            text = await r.text()
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for sample in fam.samples:
                if sample.name.endswith("_created") or sample.name.endswith("_bucket"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
        return out

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(_log_lines(self.log_path)[-n:])

    def new_log_lines(self) -> list[str]:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read()
                self._log_offset = f.tell()
        except OSError:
            return []
        return data.decode(errors="replace").splitlines()

    async def kill(self) -> float:
        """``kill -9`` (no hand-off, no goodbye: a crash); returns the ``time.monotonic()`` of
        the signal."""
        assert self.proc is not None
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        return t

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not stopped after 20 s; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            await _terminate(proc, 20)
        return proc.returncode


def summarize_log(lines: list[str], max_samples: int = 8) -> dict[str, Any]:
    """Count the server's log lines by level and event; keep a few warnings/errors as evidence."""
    levels: Counter[str] = Counter()
    events: Counter[str] = Counter()
    samples: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            level, event = str(rec.get("level", "?")), str(rec.get("event", "?"))
        except (json.JSONDecodeError, AttributeError):
            level, event = "raw", line[:60]
        levels[level] += 1
        events[f"{level}:{event}"] += 1
        if level in ("warning", "error", "critical", "raw") and len(samples) < max_samples:
            samples.append(line[:400])
    return {"levels": dict(levels), "events": dict(events.most_common(20)), "samples": samples}


# ------------------------------------------------------------------ load workers


class Worker:
    """One ``python -m bench.worker`` process and its JSON-lines conversation."""

    def __init__(self, name: str, spec: dict[str, Any], log_path: Path) -> None:
        self.name = name
        self.spec = spec
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_info: dict[str, Any] = {}

    async def start(self) -> None:
        self.proc = await _spawn(
            [sys.executable, "-m", "bench.worker", json.dumps(self.spec)],
            self.log_path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )

    async def _event(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"worker {self.name}: no answer within {timeout:.0f}s") from None
        if not line:
            await asyncio.wait_for(self.proc.wait(), 5)
            raise BenchError(f"worker {self.name} exited ({self.proc.returncode}): {self._stderr_tail()}")
        msg: dict[str, Any] = json.loads(line)
        if msg.get("event") == "error":
            raise BenchError(f"worker {self.name}: {msg.get('error')} {self._stderr_tail()}")
        return msg

    def _stderr_tail(self) -> str:
        return " | ".join(_log_lines(self.log_path)[-5:])

    async def event(self, timeout: float) -> dict[str, Any]:
        """The worker's next line (an ``error`` line raises :class:`BenchError`)."""
        return await self._event(timeout)

    async def ready(self, timeout: float) -> dict[str, Any]:
        self.ready_info = await self._event(timeout)
        return self.ready_info

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def result(self, timeout: float) -> dict[str, Any]:
        msg = await self._event(timeout)
        assert self.proc is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)
        return msg

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            await _terminate(proc, 5)


# ------------------------------------------------------------------ the machine


def _proc_field(path: str, name: str) -> str | None:
    """The value of the first ``name: value`` line of a /proc file, if any."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def server_python() -> str:
    """The interpreter `boardcast serve` runs on: BENCH_SERVER_PYTHON (the python of another
    virtual environment with Boardcast installed, to compare interpreters with the same load
    generator), else the bench's own."""
    return os.environ.get("BENCH_SERVER_PYTHON") or sys.executable


def machine_info() -> dict[str, Any]:
    cpu_model = _proc_field("/proc/cpuinfo", "model name") or "unknown"
    mem_kib = _proc_field("/proc/meminfo", "MemTotal:")  # "16318452 kB"
    mem_total = int(mem_kib.split()[0]) * 1024 if mem_kib else None
    versions = {}
    for pkg in ("aiohttp", "msgspec", "uvloop", "asyncpg", "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    commit = None
    if shutil.which("git"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_bytes": mem_total,
        "python": platform.python_version(),
        "server_python": subprocess.run(
            [server_python(), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": commit,
        "open_files_limit": _nofile(),
    }


def _nofile() -> int | None:
    import resource

    with contextlib.suppress(ValueError, OSError):
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None
