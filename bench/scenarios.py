"""The scenarios. Each runs its repetitions and returns params, per-run numbers and a summary
of medians (and ratios to its baseline where it has one)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench.common import median
from bench.harness import Bench, Board, WindowRun, fake_board
from bench.services import ServerProcess, Worker

KINDS = ("boardcast", "baseline")


def split(n: int, parts: int) -> list[int]:
    """n as ``parts`` near-equal shares."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _chunks(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into ``parts`` consecutive near-equal pieces."""
    out: list[list[Any]] = []
    start = 0
    for n in split(len(items), parts):
        out.append(items[start : start + n])
        start += n
    return out


def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    return median([r[key] for r in runs if r.get(key) is not None])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# ------------------------------------------------------------------ what every scenario does


def _out(params: dict[str, Any], kinds: tuple[str, ...] = ("boardcast",)) -> dict[str, Any]:
    """A scenario's result before its runs: params, a list of runs per kind, server reports."""
    return {"params": params, "runs": {k: [] for k in kinds}, "server": {}}


@contextlib.asynccontextmanager
async def _server(
    b: Bench, out: dict[str, Any], kind: str, key: str | None = None, settings: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """A ``kind`` server for the block, with ``settings`` over the bench's defaults (see
    :data:`bench.services.CORE_SETTINGS`: no sign-in, no rate limits); its stop report and
    settings go to ``out["server"][key or kind]``."""
    srv = await b.start_server(kind, settings)
    try:
        yield srv
    finally:
        out["server"][key or kind] = {**await b.stop_server(srv), "settings": srv.settings}


def _record(
    b: Bench, out: dict[str, Any], kind: str, label: str, rep: int, r: dict[str, Any], text: str
) -> None:
    """Keep one run's numbers and print its progress line."""
    out["runs"][kind].append(r)
    b.progress(f"{label} run {rep + 1}/{b.params.repeat}: {text}")


def _usage(run: WindowRun, server: bool = True, metrics: bool = True) -> dict[str, Any]:
    """CPU use during the window (the server's only with ``server``), and with ``metrics``
    the server's /metrics deltas."""
    used: dict[str, Any] = {"server_cpu_pct": run.server_cpu_pct} if server else {}
    used["machine_cpu_pct"] = run.machine_cpu_pct
    used["cpu_pct_by_group"] = run.cpu_by_group
    if metrics:
        used["server_metrics"] = run.metrics
    return used


def _boardcast_medians(out: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Each key's median over the Boardcast runs (scenarios without a baseline)."""
    return {key: {"boardcast": _med(out["runs"]["boardcast"], key)} for key in keys}


def _vs_baseline(out: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Each key's median for Boardcast and for the baseline, and their ratio."""
    bc, bl = out["runs"]["boardcast"], out["runs"]["baseline"]
    return {
        key: {
            "boardcast": _med(bc, key),
            "baseline": _med(bl, key),
            "ratio": _ratio(_med(bc, key), _med(bl, key)),
        }
        for key in keys
    }


def _writer_spec(b: Bench, srv: ServerProcess, conns: list[dict[str, Any]]) -> dict[str, Any]:
    """A pipelining writer process with one connection per entry of ``conns``."""
    return {"role": "writer", "url": srv.ws_url, "conns": conns, "max_inflight": b.params.max_inflight}


def _writers(
    b: Bench, name: str, srv: ServerProcess, conns: list[dict[str, Any]], procs: int
) -> list[Worker]:
    """Writer processes ``name0``, ``name1``, ... sharing the connections ``conns`` out."""
    return [
        b.worker(f"{name}{i}", _writer_spec(b, srv, mine)) for i, mine in enumerate(_chunks(conns, procs))
    ]


# The numbers of one run and the rest of its progress line, from the window, the viewers'
# results and the writer's.
Measure = Callable[[WindowRun, list[dict[str, Any]], dict[str, Any]], tuple[dict[str, Any], str]]


async def _viewers_and_writer(
    b: Bench,
    out: dict[str, Any],
    name: str,
    viewers: int,
    procs: int,
    writer_spec: Callable[[ServerProcess, Board], dict[str, Any]],
    measure: Measure,
) -> None:
    """Against Boardcast, then the baseline: ``repeat`` runs of ``viewers`` viewers (in
    ``procs`` processes) and one writer process (``writer_spec``) on one board."""
    p = b.params
    for kind in KINDS:
        async with _server(b, out, kind) as srv:
            for rep in range(p.repeat):
                board = (
                    await b.make_board(srv, name, p.columns, p.cards)
                    if kind == "boardcast"
                    else fake_board(p.columns, p.cards)
                )
                workers = [
                    b.worker(
                        f"{name}-viewers{i}",
                        {"role": "viewers", "url": srv.ws_url, "boards": [board.id], "n": n},
                    )
                    for i, n in enumerate(split(viewers, procs))
                ]
                workers.append(b.worker(f"{name}-writer", writer_spec(srv, board)))
                run = await b.run_window(workers, srv)
                r, text = measure(run, run.results[:-1], run.results[-1])
                _record(b, out, kind, f"{name} {kind}", rep, r, text)


# ------------------------------------------------------------------ fanout


async def fanout(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "viewers": p.fanout_viewers,
            "viewer_processes": p.fanout_procs,
            "writer_max_inflight": p.max_inflight,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
            "encoding": "msgpack",
        },
        KINDS,
    )

    def writer_spec(srv: ServerProcess, board: Board) -> dict[str, Any]:
        return _writer_spec(b, srv, [board.conn_spec()])

    def measure(
        run: WindowRun, vres: list[dict[str, Any]], wres: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        window = p.window_s
        events = sum(r["events"] for r in vres)
        frames = sum(r["frames"] for r in vres)
        messages = sum(r["messages"] for r in vres)
        last_ack = max(wres["last_ack_seq"].values(), default=0)
        ack_at_t1 = max(wres["last_ack_seq_at_t1"].values(), default=0)
        r = {
            "deliveries_per_s": events / window,
            "frames_per_s": frames / window,
            "messages_per_frame": messages / frames if frames else None,
            "commands_acked_per_s": wres["acked"] / window,
            "viewers_connected": sum(x["connected"] for x in vres),
            "expected_deliveries_per_s": wres["acked"] / window * sum(x["connected"] for x in vres),
            "backlog_at_t1_events": max(0, ack_at_t1 - min(x["min_seq_at_t1"] for x in vres)),
            "caught_up_after_drain": min(x["min_seq_end"] for x in vres) >= last_ack,
            "seq_gaps": sum(x["gaps"] for x in vres),
            "viewers_closed_by_server": sum(x["closed_by_server"] for x in vres),
            "close_codes": _merge(x["close_codes"] for x in vres),
            "writer_errors": wres["errors"],
            "writer_closed": wres["closed"],
            **_usage(run),
        }
        return r, (
            f"{r['deliveries_per_s']:,.0f} deliveries/s, "
            f"{r['frames_per_s']:,.0f} frames/s ({r['messages_per_frame'] or 0:.1f} msg/frame), "
            f"{r['commands_acked_per_s']:,.0f} cmd/s acked, slowest viewer behind "
            f"acks by {r['backlog_at_t1_events']} events at end of window, gaps {r['seq_gaps']}, "
            f"closed {r['viewers_closed_by_server']}, cpu: {_cpu(run)}"
        )

    await _viewers_and_writer(b, out, "fanout", p.fanout_viewers, p.fanout_procs, writer_spec, measure)
    out["summary"] = _vs_baseline(
        out, ("deliveries_per_s", "frames_per_s", "messages_per_frame", "commands_acked_per_s")
    )
    return out


# ------------------------------------------------------------------ commands


async def commands_one_board(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "writers": p.writers,
            "writer_processes": p.writer_procs,
            "max_inflight": p.max_inflight,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        },
        ("boardcast", "raw_asyncpg"),
    )
    async with _server(b, out, "boardcast") as srv:
        for rep in range(p.repeat):
            board = await b.make_board(srv, "one board", p.columns, p.cards)
            workers = _writers(b, "one-board-writers", srv, [board.conn_spec()] * p.writers, p.writer_procs)
            run = await b.run_window(workers, srv)
            r = _commands_run(run, p.window_s)
            _record(
                b,
                out,
                "boardcast",
                "commands_one_board",
                rep,
                r,
                f"{r['commands_per_s']:,.0f} acked cmd/s ({p.writers} writers), {_group_commit(run)}, "
                f"errors {r['errors']}, cpu: {_cpu(run)}",
            )
    # The bound of a server that commits each command on its own: one connection, one
    # single-row INSERT transaction at a time (run with the Boardcast server stopped).
    for rep in range(p.repeat):
        w = b.worker("raw-asyncpg", {"role": "pginsert", "dsn": b.db_url})
        run = await b.run_window([w], None)
        r = {
            "inserts_per_s": run.results[0]["inserts"] / p.window_s,
            **_usage(run, server=False, metrics=False),
        }
        _record(
            b, out, "raw_asyncpg", "raw asyncpg", rep, r, f"{r['inserts_per_s']:,.0f} single-row INSERT tx/s"
        )
    bc = _med(out["runs"]["boardcast"], "commands_per_s")
    raw = _med(out["runs"]["raw_asyncpg"], "inserts_per_s")
    out["summary"] = {
        "commands_per_s": {"boardcast": bc, "raw_asyncpg_inserts_per_s": raw, "ratio": _ratio(bc, raw)}
    }
    return out


async def commands_many_boards(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "boards": p.many_boards,
            "writer_processes": p.many_procs,
            "writers_per_board": 1,
            "max_inflight": p.max_inflight,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        }
    )
    async with _server(b, out, "boardcast") as srv:
        for rep in range(p.repeat):
            t = time.monotonic()
            boards = await b.make_boards(srv, p.many_boards, p.columns, 4)
            b.progress(f"commands_many_boards: {len(boards)} boards made in {time.monotonic() - t:.1f}s")
            workers = _writers(b, "many-boards-writers", srv, [x.conn_spec() for x in boards], p.many_procs)
            run = await b.run_window(workers, srv)
            r = _commands_run(run, p.window_s)
            per_board = [
                seq for res in run.results for seq in res["last_ack_seq"].values()
            ]  # board seq at the end: how evenly the boards were served
            r.update(
                board_seq_min=min(per_board, default=0),
                board_seq_max=max(per_board, default=0),
                board_seqs=sorted(per_board),
            )
            _record(
                b,
                out,
                "boardcast",
                "commands_many_boards",
                rep,
                r,
                f"{r['commands_per_s']:,.0f} acked cmd/s over {len(boards)} boards, {_group_commit(run)}, "
                f"board seq min/max {r['board_seq_min']}/{r['board_seq_max']}, errors {r['errors']}, "
                f"cpu: {_cpu(run)}",
            )
    out["summary"] = _boardcast_medians(out, "commands_per_s")
    return out


def _commands_run(run: WindowRun, window: float) -> dict[str, Any]:
    results = run.results
    return {
        "commands_per_s": sum(r["acked"] for r in results) / window,
        "connections": sum(r["connections"] for r in results),
        "errors": _merge(r["errors"] for r in results),
        "unanswered_after_drain": sum(r["unanswered"] for r in results),
        "writers_closed": [c for r in results for c in r["closed"]],
        **_usage(run),
    }


def _group_commit(run: WindowRun) -> str:
    m = run.metrics
    return f"mean group commit {_num(m.get('mean_commit_batch'))} cmds in {_num(m.get('mean_commit_ms'))} ms"


# ------------------------------------------------------------------ latency


async def latency(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "viewers": p.latency_viewers,
            "viewer_processes": p.latency_procs,
            "rate_per_s": p.latency_rate,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        },
        KINDS,
    )

    def writer_spec(srv: ServerProcess, board: Board) -> dict[str, Any]:
        return {
            "role": "paced",
            "url": srv.ws_url,
            "board_id": board.id,
            "cards": board.cards,
            "columns": board.columns,
            "rate": p.latency_rate,
        }

    def measure(run: WindowRun, vres: list[dict[str, Any]], w: dict[str, Any]) -> tuple[dict[str, Any], str]:
        r = {
            "event_p50_ms": w["event"]["p50_ms"],
            "event_p99_ms": w["event"]["p99_ms"],
            "event_max_ms": w["event"]["max_ms"],
            "ack_p50_ms": w["ack"]["p50_ms"],
            "ack_p99_ms": w["ack"]["p99_ms"],
            "ack_max_ms": w["ack"]["max_ms"],
            "measured_commands": w["measured"],
            "achieved_rate": w["achieved_rate"],
            "send_lag_p99_ms": w["send_lag_p99_ms"],
            "missing_events": w["missing_events"],
            "missing_acks": w["missing_acks"],
            "errors": w["errors"],
            "viewer_deliveries_per_s": sum(x["events"] for x in vres) / p.window_s,
            "viewers_closed_by_server": sum(x["closed_by_server"] for x in vres),
            "seq_gaps": sum(x["gaps"] for x in vres),
            **_usage(run),
            "detail": {"event": w["event"], "ack": w["ack"]},
        }
        return r, (
            f"send->event p50 {_num(r['event_p50_ms'])} ms "
            f"p99 {_num(r['event_p99_ms'])} ms (max {_num(r['event_max_ms'])}), send->ack p50 "
            f"{_num(r['ack_p50_ms'])} p99 {_num(r['ack_p99_ms'])} ms, rate "
            f"{r['achieved_rate'] or 0:,.0f}/s, missing {r['missing_events']}, "
            f"cpu: {_cpu(run)}"
        )

    await _viewers_and_writer(b, out, "latency", p.latency_viewers, p.latency_procs, writer_spec, measure)
    out["summary"] = _vs_baseline(out, ("event_p50_ms", "event_p99_ms", "ack_p50_ms", "ack_p99_ms"))
    return out


# ------------------------------------------------------------------ idle memory


async def idle_memory(b: Bench) -> dict[str, Any]:
    p = b.params
    n_boards = max(1, -(-p.idle_connections // p.idle_per_board))
    out = _out(
        {
            "connections": p.idle_connections,
            "processes": p.idle_procs,
            "boards": n_boards,
            "viewers_per_board": p.idle_per_board,
        }
    )
    for rep in range(p.repeat):
        # A fresh process each time: RSS never shrinks.
        async with _server(b, out, "boardcast", key=f"run{rep + 1}") as srv:
            await asyncio.sleep(1.0)
            rss_start = srv.rss()
            boards = await b.make_boards(srv, n_boards, 1, 0)
            await b.touch_boards(srv, boards)
            await asyncio.sleep(0.5)
            rss_before = srv.rss()
            ids = [x.id for x in boards]
            workers = []
            for i, n in enumerate(split(p.idle_connections, p.idle_procs)):
                # Worker i's connection j joins board (i + j * procs) % boards: even spread.
                mine = [ids[(i + j * p.idle_procs) % len(ids)] for j in range(min(n, len(ids)))]
                workers.append(
                    b.worker(
                        f"idle{i}",
                        {"role": "idle", "url": srv.ws_url, "boards": mine, "n": n, "concurrency": 32},
                    )
                )
            t = time.monotonic()
            await b.start_workers(workers)
            readies = await asyncio.gather(*(w.ready(240) for w in workers))
            open_s = time.monotonic() - t
            connected = sum(x["connected"] for x in readies)
            rss_after, samples = await _settled_rss(srv)
            health = await srv.health()
            for w in workers:
                w.send({"cmd": "stop"})
            results = await asyncio.gather(*(w.result(60) for w in workers))
            await b.reap()
            r = {
                "connected": connected,
                "target": p.idle_connections,
                "failures": _merge(x["failures"] for x in readies),
                "open_s": open_s,
                "rss_start_bytes": rss_start,
                "rss_before_bytes": rss_before,
                "rss_after_bytes": rss_after,
                "rss_samples": samples,
                "bytes_per_connection": (rss_after - rss_before) / connected if connected else None,
                "bytes_per_connection_from_start": (rss_after - rss_start) / connected if connected else None,
                "server_reported_connections": health.get("connections"),
                "closed_by_server": sum(x["closed_by_server"] for x in results),
            }
            _record(
                b,
                out,
                "boardcast",
                "idle_memory",
                rep,
                r,
                f"{connected:,}/{p.idle_connections:,} joined in "
                f"{open_s:.1f}s; RSS {rss_start / 2**20:.1f} MiB at start, {rss_before / 2**20:.1f} MiB "
                f"before, {rss_after / 2**20:.1f} MiB with them -> "
                f"{(r['bytes_per_connection'] or 0) / 1024:.1f} KiB per connection; failures {r['failures']}",
            )
    out["summary"] = {
        **_boardcast_medians(out, "bytes_per_connection"),
        "connected": {"boardcast": min((r["connected"] for r in out["runs"]["boardcast"]), default=0)},
    }
    return out


async def _settled_rss(srv: Any, max_s: float = 10.0) -> tuple[int, list[int]]:
    """RSS once it stops moving (two readings 0.5 s apart within 0.5 %), bounded in time."""
    samples = [srv.rss()]
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        samples.append(srv.rss())
        if abs(samples[-1] - samples[-2]) <= samples[-2] * 0.005:
            break
    return samples[-1], samples


# ------------------------------------------------------------------ REST


async def rest(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "cards": p.rest_cards,
            "processes": p.rest_procs,
            "concurrency_per_process": p.rest_concurrency,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        }
    )
    async with _server(b, out, "boardcast") as srv:
        board = await b.make_board(srv, "rest", 3, p.rest_cards)
        for rep in range(p.repeat):
            workers = [
                b.worker(
                    f"rest{i}",
                    {
                        "role": "rest",
                        "base": srv.base,
                        "board_id": board.id,
                        "concurrency": p.rest_concurrency,
                    },
                )
                for i in range(p.rest_procs)
            ]
            run = await b.run_window(workers, srv)
            res = run.results
            r = {
                "requests_per_s": sum(x["ok"] for x in res) / p.window_s,
                "statuses": _merge(x["statuses"] for x in res),
                "p50_ms": median([x["p50_ms"] for x in res if x["p50_ms"] is not None]),
                "p99_ms": max((x["p99_ms"] for x in res if x["p99_ms"] is not None), default=None),
                **_usage(run, metrics=False),
            }
            _record(
                b,
                out,
                "boardcast",
                "rest",
                rep,
                r,
                f"{r['requests_per_s']:,.0f} GET/s, "
                f"p50 {_num(r['p50_ms'])} ms p99 {_num(r['p99_ms'])} ms, statuses {r['statuses']}, "
                f"cpu: {_cpu(run)}",
            )
    out["summary"] = _boardcast_medians(out, "requests_per_s")
    return out


# ------------------------------------------------------------------ helpers


def _merge(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cpu(run: Any) -> str:
    """Who used the two cores during the window, in % of one core."""
    u = run.cpu_by_group
    return " ".join(
        f"{k} {u[k]:.0f}%" for k in ("server", "postgres", "load", "irq", "other", "steal") if k in u
    )


async def large_board(b: Bench) -> dict[str, Any]:
    """One board of 10,000 cards: activation, snapshot, REST, commands, memory (bench/large.py,
    imported here on use: it builds on this module's helpers)."""
    from bench.large import large_board as run

    return await run(b)


SCENARIOS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout,
    "commands_one_board": commands_one_board,
    "commands_many_boards": commands_many_boards,
    "latency": latency,
    "idle_memory": idle_memory,
    "rest": rest,
    "large_board": large_board,
}
