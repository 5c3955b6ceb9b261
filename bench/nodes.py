"""Several nodes: the fan-out, write and latency workloads with their clients spread over the
nodes of one cluster (``boardcast serve`` processes sharing the bench's PostgreSQL database
and Redis prefix), against the same workloads on one node, in the same run.

The board of each run is made over REST on the first node, which activates it there (the
run's progress line shows each node's ``boards_owned``): the first node is the owner, the
others forward commands and joins to it over their Redis inboxes and get one copy of each
frame for all their viewers. What forwarding costs is read per **server CPU-second** (every
node's CPU summed): throughput ÷ CPU with k nodes against the same with one node, so that the
extra cores the other nodes get do not count as a gain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bench.harness import Bench, WindowRun
from bench.scenarios import (
    _commands_run,
    _cpu,
    _med,
    _merge,
    _num,
    _out,
    _ratio,
    _record,
    _usage,
    _writers,
    split,
)
from bench.services import ServerProcess

NODE_COUNTS = (1, 2, 3)


def label(k: int) -> str:
    return f"{k}_node" if k == 1 else f"{k}_nodes"


def rotated(items: tuple[Any, ...], k: int) -> tuple[Any, ...]:
    """``items`` starting at ``k`` (mod len): variants take turns being first, so drift over a
    run hits them alike."""
    k %= len(items)
    return items[k:] + items[:k]


@contextlib.asynccontextmanager
async def cluster(
    b: Bench, out: dict[str, Any], n: int, settings: dict[str, str] | None = None
) -> AsyncIterator[list[ServerProcess]]:
    """``n`` nodes for the block (the first started alone: it applies the migrations); their
    stop reports go to ``out["server"]["node1"]``, ..."""
    nodes = [await b.start_server("boardcast", settings)]
    try:
        nodes += await asyncio.gather(*(b.start_server("boardcast", settings) for _ in range(n - 1)))
        yield nodes
    finally:
        # the owner last, so that no node sees it go while it still has viewers of its boards
        for i, srv in reversed(list(enumerate(nodes))):
            out["server"][f"node{i + 1}"] = {**await b.stop_server(srv), "settings": srv.settings}


async def boards_owned(nodes: list[ServerProcess]) -> list[int]:
    """Each node's ``node.boards_owned`` from /health."""
    healths = await asyncio.gather(*(srv.health() for srv in nodes))
    return [int(h.get("node", {}).get("boards_owned", -1)) for h in healths]


def node_usage(run: WindowRun, throughput: float) -> dict[str, Any]:
    """CPU of the window (every node's summed as ``server``), each node's, and ``throughput``
    per server CPU-second."""
    cpu_s = (run.server_cpu_pct or 0.0) / 100
    return {
        **_usage(run),
        "node_cpu_pct": run.node_cpu_pct,
        "per_server_cpu_s": throughput / cpu_s if cpu_s else None,
    }


def node_cpu(run: WindowRun) -> str:
    return "/".join(f"{x:.0f}" for x in run.node_cpu_pct) + "%"


def per_node_count(out: dict[str, Any], key: str) -> dict[str, Any]:
    """For each node count: the medians of ``key`` and of it per server CPU-second, that
    ratio against one node, and the overhead: how much more server CPU each unit took."""
    runs = out["runs"]
    one = _med(runs[label(1)], "per_server_cpu_s")
    summary: dict[str, Any] = {}
    for k in NODE_COUNTS:
        if label(k) not in runs:
            continue
        per_cpu = _med(runs[label(k)], "per_server_cpu_s")
        ratio = _ratio(per_cpu, one)
        summary[label(k)] = {
            key: _med(runs[label(k)], key),
            "per_server_cpu_s": per_cpu,
            "per_cpu_ratio_to_1_node": ratio,
            "cpu_overhead_pct": (1 / ratio - 1) * 100 if ratio else None,
        }
    return summary


# ------------------------------------------------------------------ fan-out


async def nodes_fanout(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "viewers": p.fanout_viewers,
            "viewer_processes": p.fanout_procs,
            "writer_max_inflight": p.max_inflight,
            "node_counts": list(NODE_COUNTS),
            "writer_on": "node1 (the owner)",
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        },
        tuple(label(k) for k in NODE_COUNTS),
    )
    async with cluster(b, out, max(NODE_COUNTS)) as nodes:
        for rep in range(p.repeat):
            for k in rotated(NODE_COUNTS, rep):
                board = await b.make_board(nodes[0], "nodes fanout", p.columns, p.cards)
                owned = await boards_owned(nodes)
                urls = [srv.ws_url for srv in nodes[:k]]
                workers = [
                    b.worker(
                        f"nodes-fanout-viewers{i}",
                        {"role": "viewers", "urls": urls, "boards": [board.id], "n": n},
                    )
                    for i, n in enumerate(split(p.fanout_viewers, p.fanout_procs))
                ]
                writer = {
                    "role": "writer",
                    "url": nodes[0].ws_url,
                    "conns": [board.conn_spec()],
                    "max_inflight": p.max_inflight,
                }
                workers.append(b.worker("nodes-fanout-writer", writer))
                run = await b.run_window(workers, nodes[0], others=tuple(nodes[1:]))
                vres, wres = run.results[:-1], run.results[-1]
                deliveries = sum(r["events"] for r in vres) / p.window_s
                r = {
                    "nodes": k,
                    "boards_owned": owned,
                    "deliveries_per_s": deliveries,
                    "frames_per_s": sum(r["frames"] for r in vres) / p.window_s,
                    "commands_acked_per_s": wres["acked"] / p.window_s,
                    "viewers_connected": sum(x["connected"] for x in vres),
                    "join_failures": _merge(x["failures"] for x in vres),
                    "seq_gaps": sum(x["gaps"] for x in vres),
                    "caught_up_after_drain": min(x["min_seq_end"] for x in vres)
                    >= max(wres["last_ack_seq"].values(), default=0),
                    "viewers_closed_by_server": sum(x["closed_by_server"] for x in vres),
                    "close_codes": _merge(x["close_codes"] for x in vres),
                    "writer_errors": wres["errors"],
                    **node_usage(run, deliveries),
                }
                _record(
                    b,
                    out,
                    label(k),
                    f"nodes_fanout {k} node(s)",
                    rep,
                    r,
                    f"{deliveries:,.0f} deliveries/s ({r['viewers_connected']} viewers), "
                    f"{r['commands_acked_per_s']:,.0f} cmd/s acked, "
                    f"{r['per_server_cpu_s'] or 0:,.0f} deliveries per server CPU-s, gaps {r['seq_gaps']}, "
                    f"caught up {r['caught_up_after_drain']}, closed {r['viewers_closed_by_server']}, "
                    f"owned {owned}, nodes cpu {node_cpu(run)}, cpu: {_cpu(run)}",
                )
    out["summary"] = per_node_count(out, "deliveries_per_s")
    return out


# ------------------------------------------------------------------ commands


async def nodes_commands(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "writers": p.writers,
            "writer_processes": p.writer_procs,
            "max_inflight": p.max_inflight,
            "node_counts": list(NODE_COUNTS),
            "writers_on": "writer i on node i % nodes (node1 owns the board)",
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        },
        tuple(label(k) for k in NODE_COUNTS),
    )
    async with cluster(b, out, max(NODE_COUNTS)) as nodes:
        for rep in range(p.repeat):
            for k in rotated(NODE_COUNTS, rep):
                board = await b.make_board(nodes[0], "nodes commands", p.columns, p.cards)
                owned = await boards_owned(nodes)
                conns = [{**board.conn_spec(), "url": nodes[i % k].ws_url} for i in range(p.writers)]
                workers = _writers(b, "nodes-commands-writers", nodes[0], conns, p.writer_procs)
                run = await b.run_window(workers, nodes[0], others=tuple(nodes[1:]))
                r = _commands_run(run, p.window_s)
                r.update(nodes=k, boards_owned=owned, **node_usage(run, r["commands_per_s"]))
                m = run.metrics
                _record(
                    b,
                    out,
                    label(k),
                    f"nodes_commands {k} node(s)",
                    rep,
                    r,
                    f"{r['commands_per_s']:,.0f} acked cmd/s ({p.writers} writers), "
                    f"{r['per_server_cpu_s'] or 0:,.0f} per server CPU-s, mean group commit "
                    f"{_num(m.get('mean_commit_batch'))} cmds, forwarded round trip "
                    f"{_num(m.get('mean_forward_ms', {}).get('execute'))} ms, errors {r['errors']}, "
                    f"unanswered {r['unanswered_after_drain']}, owned {owned}, nodes cpu {node_cpu(run)}, "
                    f"cpu: {_cpu(run)}",
                )
    out["summary"] = per_node_count(out, "commands_per_s")
    return out


# ------------------------------------------------------------------ latency

WHERE = ("owner", "other_node")


async def nodes_latency(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "viewers": p.latency_viewers,
            "viewer_processes": p.latency_procs,
            "viewers_on": "half on node1 (the owner), half on node2",
            "rate_per_s": p.latency_rate,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        },
        WHERE,
    )
    async with cluster(b, out, 2) as nodes:
        for rep in range(p.repeat):
            for where in rotated(WHERE, rep):
                board = await b.make_board(nodes[0], "nodes latency", p.columns, p.cards)
                owned = await boards_owned(nodes)
                urls = [srv.ws_url for srv in nodes]
                workers = [
                    b.worker(
                        f"nodes-latency-viewers{i}",
                        {"role": "viewers", "urls": urls, "boards": [board.id], "n": n},
                    )
                    for i, n in enumerate(split(p.latency_viewers, p.latency_procs))
                ]
                paced = {
                    "role": "paced",
                    "url": (nodes[0] if where == "owner" else nodes[1]).ws_url,
                    "board_id": board.id,
                    "cards": board.cards,
                    "columns": board.columns,
                    "rate": p.latency_rate,
                }
                workers.append(b.worker(f"nodes-latency-{where}", paced))
                run = await b.run_window(workers, nodes[0], others=(nodes[1],))
                vres, w = run.results[:-1], run.results[-1]
                r = {
                    "event_p50_ms": w["event"]["p50_ms"],
                    "event_p99_ms": w["event"]["p99_ms"],
                    "event_max_ms": w["event"]["max_ms"],
                    "ack_p50_ms": w["ack"]["p50_ms"],
                    "ack_p99_ms": w["ack"]["p99_ms"],
                    "measured_commands": w["measured"],
                    "achieved_rate": w["achieved_rate"],
                    "missing_events": w["missing_events"],
                    "missing_acks": w["missing_acks"],
                    "errors": w["errors"],
                    "viewers_connected": sum(x["connected"] for x in vres),
                    "seq_gaps": sum(x["gaps"] for x in vres),
                    "viewers_closed_by_server": sum(x["closed_by_server"] for x in vres),
                    "boards_owned": owned,
                    **_usage(run),
                    "node_cpu_pct": run.node_cpu_pct,
                    "detail": {"event": w["event"], "ack": w["ack"]},
                }
                _record(
                    b,
                    out,
                    where,
                    f"nodes_latency writer on {where}",
                    rep,
                    r,
                    f"send->event p50 {_num(r['event_p50_ms'])} p99 {_num(r['event_p99_ms'])} ms "
                    f"(max {_num(r['event_max_ms'])}), send->ack p50 {_num(r['ack_p50_ms'])} p99 "
                    f"{_num(r['ack_p99_ms'])} ms, forwarded command round trip "
                    f"{_num(run.metrics.get('mean_forward_ms', {}).get('execute'))} ms mean, "
                    f"rate {r['achieved_rate'] or 0:,.0f}/s, missing "
                    f"{r['missing_events']}/{r['missing_acks']}, gaps {r['seq_gaps']}, owned {owned}, "
                    f"nodes cpu {node_cpu(run)}, cpu: {_cpu(run)}",
                )
    runs = out["runs"]
    out["summary"] = {
        key: {
            "other_node": _med(runs["other_node"], key),
            "owner": _med(runs["owner"], key),
            "ratio": _ratio(_med(runs["other_node"], key), _med(runs["owner"], key)),
        }
        for key in ("event_p50_ms", "event_p99_ms", "ack_p50_ms", "ack_p99_ms")
    }
    return out
