"""``failover``: the time from ``kill -9`` of a board's owner to the first command accepted
from a client on another node, with the default lease and heartbeat settings.

One node (the survivor) stays up for the whole scenario; each run starts a fresh node (the
victim), makes a board on it over REST (so the victim owns it: checked in /health), and starts
one client (:mod:`bench.failover_client`) on the survivor that joins the board and sends a
command every 10 ms, forwarded to the victim. Once its acks flow, the victim gets SIGKILL and
the client carries on as a real one would: on ``left`` (``board_unavailable``) it joins again
with its last seq, on an error it sends the next command. The time reported is kill → the
first ack of a command sent after the kill; the client also reports when it was told to leave
and when its re-join was answered, and checks that it saw no seq gap or repeat.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import Bench
from bench.nodes import boards_owned
from bench.scenarios import _med, _num, _out
from bench.services import BenchError

STEADY_S = 0.5  # commands flowing through the victim before the kill


def _counter(m: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in m.items() if k.startswith(prefix) and v}


def _delta(m0: dict[str, float], m1: dict[str, float]) -> dict[str, float]:
    return {k: v - m0.get(k, 0.0) for k, v in m1.items() if v - m0.get(k, 0.0)}


async def failover(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "runs": p.failover_runs,
            "client_interval_s": 0.01,
            "steady_before_kill_s": STEADY_S,
            "settings": "defaults (BOARDCAST_LEASE_TTL_S, BOARDCAST_NODE_TTL_S, ...)",
        },
        ("failover",),
    )
    survivor = await b.start_server("boardcast")
    try:
        for rep in range(p.failover_runs):
            victim = await b.start_server("boardcast")
            board = await b.make_board(victim, "failover", p.columns, 4)
            owned = await boards_owned([victim, survivor])
            if owned[0] != 1:
                raise BenchError(f"the victim should own the new board; boards owned: {owned}")
            spec = {
                "role": "failover",
                "url": survivor.ws_url,
                "board_id": board.id,
                "cards": board.cards,
                "columns": board.columns,
                "interval_s": 0.01,
                "max_s": 60,
            }
            w = b.worker("failover-client", spec)
            await b.start_workers([w])
            await w.ready(30)
            m0 = await survivor.metrics()
            w.send({"cmd": "go"})
            steady = await w.event(30)
            if steady.get("event") != "steady":
                raise BenchError(f"failover client: expected steady, got {steady}")
            await asyncio.sleep(STEADY_S)
            t_kill = await victim.kill()
            w.send({"cmd": "killed", "t": t_kill})
            res = await w.result(45)
            m1 = await survivor.metrics()
            after = await boards_owned([survivor])
            await b.reap()
            victim_report = await b.stop_server(victim, killed=True)
            moved = _delta(m0, m1)
            r = {
                **{k: v for k, v in res.items() if k != "event"},
                "boards_owned_before_kill": owned,
                "survivor_boards_owned_after": after[0],
                "survivor_failovers": _counter(moved, "boardcast_failovers"),
                "survivor_lease_events": _counter(moved, "boardcast_lease_events"),
                "victim_log": victim_report,
            }
            out["runs"]["failover"].append(r)
            b.progress(
                f"failover run {rep + 1}/{p.failover_runs}: first accepted command "
                f"{res['first_ack_after_kill_s']:.3f} s after kill -9 "
                f"(told to leave after {_num(res['left_after_kill_s'])} s, re-joined after "
                f"{_num(res['rejoined_after_kill_s'])} s), {res['commands_acked']} acked of "
                f"{res['commands_sent']} sent, gaps {res['gaps']}, repeats {res['repeats']}, "
                f"events: {_brief(res['counts'])}",
            )
    finally:
        out["server"]["survivor"] = {**await b.stop_server(survivor), "settings": survivor.settings}
    runs = out["runs"]["failover"]
    out["summary"] = {
        key: {"boardcast": _med(runs, key)}
        for key in ("first_ack_after_kill_s", "left_after_kill_s", "rejoined_after_kill_s")
    }
    out["summary"]["first_ack_after_kill_s"]["max"] = max(
        (r["first_ack_after_kill_s"] for r in runs), default=None
    )
    return out


def _brief(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"
