"""``large_board``: one board of 10,000 cards (20 columns, labels, custom field values, dates,
assignees, checklists with items, comments, a few archived cards), built once through the
board's own rules and the repository (bench/large_build.py), then against a **fresh server
per run**:

1. **activation**: the first join after the server started activates the board from
   PostgreSQL; the server's ``boardcast_board_activation_seconds`` (epoch claim, every table
   read, the in-memory state built) and the client's join → joined for that cold join;
2. **snapshot**: the first join in JSON (its snapshot, like the cold join's, is encoded whole);
   then joins in both encodings, each after a change (``fresh``: the server builds the
   snapshot, encoding again only the entities that changed) and again with nothing changed
   (``cached``: the same bytes); client join → joined and the server's
   ``boardcast_snapshot_build_seconds`` per encoding;
3. **REST**: ``GET /api/v1/boards/{id}`` from ``large_rest_procs`` x ``large_rest_concurrency``
   request loops: requests/s and p50/p99;
4. **commands**: ``card.move`` / ``card.update`` at ``large_command_rate`` per second on a fixed
   schedule (the ``latency`` scenario's writer and observer), against the large board and, as
   the baseline in the same run, a board of 20 cards;
5. **memory**: server RSS before the cold join and after it (settled: the board's state and
   its first snapshot in MessagePack), and after the joins (both encodings' bytes kept).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import median
from bench.harness import Bench, Board, post_json
from bench.large_build import build_large_board
from bench.scenarios import _cpu, _med, _num, _out, _ratio, _record, _server, _settled_rss, _usage
from bench.services import BenchError, ServerProcess
from server.access import DEV_USER_ID

ACTIVATION = "boardcast_board_activation_seconds"
SNAPSHOT = "boardcast_snapshot_build_seconds"


def _hist(m0: dict[str, float], m1: dict[str, float], name: str, labels: str = "") -> dict[str, Any]:
    """Count, and mean in ms, of what a histogram observed between two scrapes."""
    key = f"{{{labels}}}" if labels else ""
    n = m1.get(f"{name}_count{key}", 0.0) - m0.get(f"{name}_count{key}", 0.0)
    s = m1.get(f"{name}_sum{key}", 0.0) - m0.get(f"{name}_sum{key}", 0.0)
    return {"count": n, "mean_ms": s / n * 1000 if n else None}


async def _joins(b: Bench, srv: ServerProcess, board: Board) -> dict[str, Any]:
    """Cold join, then fresh and cached joins in both encodings, with the server's side."""
    p = b.params
    w = b.worker(
        "large-joins",
        {
            "role": "joins",
            "url": srv.ws_url,
            "board_id": board.id,
            "cards": board.cards[:200],
            "rounds": p.large_join_rounds,
        },
    )
    await b.start_workers([w])
    await w.ready(60)
    await asyncio.sleep(0.5)
    rss_idle, _ = await _settled_rss(srv)
    m0 = await srv.metrics()
    w.send({"cmd": "go"})
    cold = await w.event(120)
    rss_active, _ = await _settled_rss(srv)
    m1 = await srv.metrics()
    w.send({"cmd": "go"})
    first_json = await w.event(60)
    m1j = await srv.metrics()
    w.send({"cmd": "go"})
    res = await w.result(300)
    m2 = await srv.metrics()
    rss_after, _ = await _settled_rss(srv)
    await b.reap()
    got = cold.get("snapshot", {}).get("cards")
    if got != len(board.cards):
        raise BenchError(f"the cold join's snapshot held {got} cards, not {len(board.cards)}")
    joins = res["joins"]
    r: dict[str, Any] = {
        "activation_ms": _hist(m0, m1, ACTIVATION)["mean_ms"],
        "activations": _hist(m0, m1, ACTIVATION)["count"],
        "cold_join_ms": cold["ms"],
        # the first snapshot in each encoding: encoded whole (and cut into its entities' bytes)
        "first_snapshot_msgpack_server_ms": _hist(m0, m1, SNAPSHOT, "encoding=msgpack")["mean_ms"],
        "first_snapshot_json_server_ms": _hist(m1, m1j, SNAPSHOT, "encoding=json")["mean_ms"],
        "first_join_json_ms": first_json["ms"],
        "snapshot_counts": cold.get("snapshot", {}),
        "snapshot_bytes": res["snapshot_bytes"],
        "rss_idle_bytes": rss_idle,
        "rss_active_bytes": rss_active,
        "rss_after_joins_bytes": rss_after,
        "rss_activation_delta_bytes": rss_active - rss_idle,
        "join_detail": joins,
    }
    for enc in ("msgpack", "json"):
        r[f"join_{enc}_fresh_ms"] = joins[enc]["fresh"]["p50_ms"]
        r[f"join_{enc}_cached_ms"] = joins[enc]["cached"]["p50_ms"]
        r[f"snapshot_{enc}_server_ms"] = _hist(m1j, m2, SNAPSHOT, f"encoding={enc}")["mean_ms"]
    return r


async def _rest(b: Bench, srv: ServerProcess, board: Board) -> dict[str, Any]:
    p = b.params
    workers = [
        b.worker(
            f"large-rest{i}",
            {"role": "rest", "base": srv.base, "board_id": board.id, "concurrency": p.large_rest_concurrency},
        )
        for i in range(p.large_rest_procs)
    ]
    run = await b.run_window(workers, srv, ready_timeout=120)
    res = run.results
    return {
        "rest_requests_per_s": sum(x["ok"] for x in res) / p.window_s,
        "rest_statuses": {k: v for x in res for k, v in x["statuses"].items()},
        "rest_p50_ms": median([x["p50_ms"] for x in res if x["p50_ms"] is not None]),
        "rest_p99_ms": max((x["p99_ms"] for x in res if x["p99_ms"] is not None), default=None),
        "rest_cpu": _cpu(run),
        "rest_usage": _usage(run, metrics=False),
    }


async def _commands(b: Bench, srv: ServerProcess, board: Board, prefix: str) -> dict[str, Any]:
    p = b.params
    w = b.worker(
        f"{prefix}-paced",
        {
            "role": "paced",
            "url": srv.ws_url,
            "board_id": board.id,
            "cards": board.cards[:400],
            "columns": board.columns,
            "rate": p.large_command_rate,
        },
    )
    run = await b.run_window([w], srv, ready_timeout=120)
    x = run.results[0]
    return {
        f"{prefix}_ack_p50_ms": x["ack"]["p50_ms"],
        f"{prefix}_ack_p99_ms": x["ack"]["p99_ms"],
        f"{prefix}_event_p50_ms": x["event"]["p50_ms"],
        f"{prefix}_event_p99_ms": x["event"]["p99_ms"],
        f"{prefix}_achieved_rate": x["achieved_rate"],
        f"{prefix}_missing_acks": x["missing_acks"],
        f"{prefix}_errors": x["errors"],
        f"{prefix}_cpu": _cpu(run),
        f"{prefix}_mean_commit_ms": run.metrics.get("mean_commit_ms"),
    }


async def large_board(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "cards": p.large_cards,
            "columns": p.large_columns,
            "join_rounds": p.large_join_rounds,
            "rest_processes": p.large_rest_procs,
            "rest_concurrency_per_process": p.large_rest_concurrency,
            "command_rate_per_s": p.large_command_rate,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        }
    )
    # The boards are made on a first server (which also migrates the database) and filled with
    # it stopped: the build takes an epoch of its own, which would fence an active actor out.
    async with _server(b, out, "boardcast", key="setup") as srv:
        info = await post_json(srv, "/api/v1/boards", {"title": "large board"}, 201)
        small = await b.make_board(srv, "small board", p.columns, p.cards)
    built = await build_large_board(
        b.db_url, info["id"], DEV_USER_ID, columns=p.large_columns, cards=p.large_cards
    )
    out["board"] = {"counts": built.counts, "build_s": built.seconds}
    b.progress(f"large_board: built in {built.seconds:.1f}s: {built.counts}")
    board = Board(built.board_id, built.columns, built.cards)
    for rep in range(p.repeat):
        async with _server(b, out, "boardcast", key=f"run{rep + 1}") as srv:
            t = time.monotonic()
            r = await _joins(b, srv, board)
            r.update(await _rest(b, srv, board))
            r.update(await _commands(b, srv, board, "large"))
            r.update(await _commands(b, srv, small, "small"))
            r["run_s"] = time.monotonic() - t
            _record(
                b,
                out,
                "boardcast",
                "large_board",
                rep,
                r,
                f"activation {_num(r['activation_ms'])} ms (cold join {_num(r['cold_join_ms'])} ms), "
                f"join msgpack fresh/cached {_num(r['join_msgpack_fresh_ms'])}/"
                f"{_num(r['join_msgpack_cached_ms'])} ms "
                f"(server {_num(r['snapshot_msgpack_server_ms'])}), json "
                f"{_num(r['join_json_fresh_ms'])}/{_num(r['join_json_cached_ms'])} ms "
                f"(server {_num(r['snapshot_json_server_ms'])}), {r['snapshot_bytes']} bytes; "
                f"REST {r['rest_requests_per_s']:,.1f} GET/s p50 {_num(r['rest_p50_ms'])} p99 "
                f"{_num(r['rest_p99_ms'])} ms; commands ack p50/p99 {_num(r['large_ack_p50_ms'])}/"
                f"{_num(r['large_ack_p99_ms'])} ms (20-card board {_num(r['small_ack_p50_ms'])}/"
                f"{_num(r['small_ack_p99_ms'])}); RSS +{r['rss_activation_delta_bytes'] / 2**20:.1f} MiB "
                f"on activation; REST cpu: {r['rest_cpu']}",
            )
    runs = out["runs"]["boardcast"]
    keys = (
        "activation_ms",
        "cold_join_ms",
        "first_join_json_ms",
        "first_snapshot_msgpack_server_ms",
        "first_snapshot_json_server_ms",
        "join_msgpack_fresh_ms",
        "join_msgpack_cached_ms",
        "snapshot_msgpack_server_ms",
        "join_json_fresh_ms",
        "join_json_cached_ms",
        "snapshot_json_server_ms",
        "rest_requests_per_s",
        "rest_p50_ms",
        "rest_p99_ms",
        "large_ack_p50_ms",
        "large_ack_p99_ms",
        "large_event_p50_ms",
        "large_event_p99_ms",
        "small_ack_p50_ms",
        "small_ack_p99_ms",
        "small_event_p50_ms",
        "small_event_p99_ms",
        "rss_activation_delta_bytes",
        "rss_after_joins_bytes",
        "rss_idle_bytes",
    )
    out["summary"] = {k: {"boardcast": _med(runs, k)} for k in keys}
    s = out["summary"]
    for k in ("ack_p50_ms", "ack_p99_ms", "event_p50_ms", "event_p99_ms"):
        s[f"large_{k}"]["baseline"] = s[f"small_{k}"]["boardcast"]
        s[f"large_{k}"]["ratio"] = _ratio(s[f"large_{k}"]["boardcast"], s[f"small_{k}"]["boardcast"])
    s["snapshot_bytes"] = runs[-1]["snapshot_bytes"] if runs else {}
    return out
