"""``reconnect_storm``: every viewer of one board (re)connecting and joining at the same moment,
as after a deploy. It lives apart from :mod:`bench.scenarios` because its workers are driven
phase by phase (fresh storm, close, resume storm), not through one measurement window.

Measured per storm, from the release (the same ``time.monotonic()`` instant in every worker)
until the last viewer has its ``joined``: that wall time, the server's CPU seconds per
connect + join (psutil on the server process over the same interval), and from ``/metrics``
how many joins shared one access read (``boardcast_join_run_size``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp

from bench.common import median, sleep_until
from bench.harness import NOISY_OTHER_CPU_PCT, Bench, Board, cpu_snapshot, cpu_used
from bench.scenarios import _cpu, _out, _record, _server, split
from bench.services import BenchError, ServerProcess, Worker

PHASES = ("fresh", "resume")


def _server_cpu_s(c0: dict[str, dict[int, float]], c1: dict[str, dict[int, float]]) -> float:
    return sum(c1["server"].values()) - sum(c0["server"].values())


def _d(m0: dict[str, float], m1: dict[str, float], key: str) -> float:
    return m1.get(key, 0.0) - m0.get(key, 0.0)


def _groups(srv: ServerProcess, workers: list[Worker]) -> dict[str, list[int]]:
    return {
        "server": [srv.pid],
        "load": [os.getpid(), *(w.proc.pid for w in workers if w.proc is not None)],
    }


async def _storm(b: Bench, srv: ServerProcess, workers: list[Worker], phase: str) -> dict[str, Any]:
    """Release every worker's connections at one instant; wait for all their ``joined``."""
    m0 = await srv.metrics()
    groups = _groups(srv, workers)
    start = time.monotonic() + 0.3
    for w in workers:
        w.send({"cmd": "go", "phase": phase, "start": start})
    await sleep_until(start)
    c0 = cpu_snapshot(groups)
    reports = await asyncio.gather(*(w.event(180) for w in workers))
    end = time.monotonic()
    c1 = cpu_snapshot(groups)
    m1 = await srv.metrics()
    used = cpu_used(c0, c1, end - start)
    if used["other"] > NOISY_OTHER_CPU_PCT:
        b.noisy_windows += 1
        b.progress(f"!! other processes used {used['other']:.0f}% of a core during this storm")
    joined = sum(r["joined"] for r in reports)
    cpu_s = _server_cpu_s(c0, c1)
    runs = _d(m0, m1, "boardcast_join_run_size_count")
    failures: dict[str, int] = {}
    for r in reports:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    lasts = [r["last_s"] for r in reports if r["last_s"] is not None]
    return {
        "joined": joined,
        "snapshots": sum(r["snapshots"] for r in reports),
        "failures": failures,
        "all_joined_s": max(lasts) if lasts else None,
        "p50_joined_s": median([r["p50_s"] for r in reports if r["p50_s"] is not None]),
        "server_cpu_s": cpu_s,
        "server_cpu_ms_per_join": cpu_s / joined * 1000 if joined else None,
        "access_reads": runs,
        "joins_per_access_read": _d(m0, m1, "boardcast_join_run_size_sum") / runs if runs else None,
        "frames_out": sum(_d(m0, m1, k) for k in m1 if k.startswith("boardcast_ws_frames_out_total")),
        "cpu_pct_by_group": used,
    }


async def _close_all(srv: ServerProcess, workers: list[Worker]) -> dict[str, Any]:
    """Every viewer closes; returns once the server counts no connection (bounded)."""
    groups = _groups(srv, workers)
    c0, t0 = cpu_snapshot(groups), time.monotonic()
    for w in workers:
        w.send({"cmd": "close"})
    await asyncio.gather(*(w.event(60) for w in workers))
    # Another process's count: polled (600 x 50 ms at the most).
    for _ in range(600):
        left = (await srv.health()).get("connections")
        if not left:
            break
        await asyncio.sleep(0.05)
    if left:
        raise BenchError(f"the server still counts {left} connections 30 s after they closed")
    return {"close_s": time.monotonic() - t0, "close_server_cpu_s": _server_cpu_s(c0, cpu_snapshot(groups))}


async def _change_cards(srv: ServerProcess, board: Board, n: int) -> None:
    """``n`` card updates over REST while the viewers are away: each resume replays them."""
    async with aiohttp.ClientSession(base_url=srv.base) as s:
        for i in range(n):
            card = board.cards[i % len(board.cards)]
            path = f"/api/v1/boards/{board.id}/cards/{card}"
            async with s.patch(path, json={"title": f"changed {i}"}) as r:
                if r.status != 200:
                    raise BenchError(f"PATCH {path} -> {r.status}: {(await r.text())[:200]}")


async def reconnect_storm(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "viewers": p.storm_viewers,
            "processes": p.storm_procs,
            "cards": p.storm_cards,
            "changes_while_away": p.storm_changes,
            "encoding": "msgpack",
        }
    )
    async with _server(b, out, "boardcast") as srv:
        for rep in range(p.repeat):
            board = await b.make_board(srv, "storm", p.columns, p.storm_cards)
            workers = [
                b.worker(
                    f"storm{i}",
                    {"role": "storm", "url": srv.ws_url, "board_id": board.id, "n": n, "max_s": 600},
                )
                for i, n in enumerate(split(p.storm_viewers, p.storm_procs))
            ]
            await b.start_workers(workers)
            await asyncio.gather(*(w.ready(60) for w in workers))
            r: dict[str, Any] = {"fresh": await _storm(b, srv, workers, "fresh")}
            r.update(await _close_all(srv, workers))
            await _change_cards(srv, board, p.storm_changes)
            r["resume"] = await _storm(b, srv, workers, "resume")
            for w in workers:
                w.send({"cmd": "stop"})
            await asyncio.gather(*(w.result(60) for w in workers))
            await b.reap()
            for ph in PHASES:
                r[f"{ph}_all_joined_s"] = r[ph]["all_joined_s"]
                r[f"{ph}_server_cpu_ms_per_join"] = r[ph]["server_cpu_ms_per_join"]
                r[f"{ph}_joins_per_access_read"] = r[ph]["joins_per_access_read"]
            _record(b, out, "boardcast", "reconnect_storm", rep, r, _line(r, p.storm_viewers))
    runs = out["runs"]["boardcast"]
    out["summary"] = {
        key: {"boardcast": median([x[key] for x in runs if x.get(key) is not None])}
        for ph in PHASES
        for key in (f"{ph}_all_joined_s", f"{ph}_server_cpu_ms_per_join", f"{ph}_joins_per_access_read")
    }
    return out


def _line(r: dict[str, Any], n: int) -> str:
    parts = []
    for ph in PHASES:
        s = r[ph]
        parts.append(
            f"{ph}: {s['joined']:,}/{n:,} joined in {_s(s['all_joined_s'])} (p50 {_s(s['p50_joined_s'])}), "
            f"server {_ms(s['server_cpu_ms_per_join'])} CPU-ms per connect+join, "
            f"{_n(s['joins_per_access_read'])} joins per access read, {s['snapshots']} snapshots, "
            f"failures {s['failures']}, cpu: {_cpu(_Used(s['cpu_pct_by_group']))}"
        )
    return "; ".join(parts) + f"; close {r['close_s']:.2f}s"


class _Used:
    """What :func:`bench.scenarios._cpu` reads from a window run."""

    def __init__(self, used: dict[str, float]) -> None:
        self.cpu_by_group = used


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _n(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"
