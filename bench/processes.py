"""``processes``: commands per second to many boards (one writer each, as in
``commands_many_boards``) against ``boardcast serve`` and ``boardcast serve --processes 2``
in the same run, each on a port of its own.

The boards of every run are made first, over REST on a setup node that is then stopped
(SIGTERM: it hands its leases off), so no board is active anywhere when a run starts. Each
writer's join then activates its board where the kernel sent the connection (SO_REUSEPORT
spreads them over the children): placement by first use, so nothing is forwarded and the
boards split between the children by chance (the progress line shows the split, read from
the children's /health). The server's CPU is the supervising parent's and its children's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import Bench
from bench.nodes import rotated
from bench.scenarios import _commands_run, _cpu, _med, _num, _out, _ratio, _record, _writers
from bench.services import BenchError, ServerProcess

VARIANTS = {"one_process": (), "two_processes": ("--processes", "2")}


async def children_owned(srv: ServerProcess, children: int, max_s: float = 30.0) -> dict[str, int]:
    """``node.boards_owned`` by node id, from /health asked on fresh connections (the kernel
    picks a child for each) until ``children`` distinct nodes answered."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + max_s
    while len(seen) < children:
        if time.monotonic() > deadline:
            raise BenchError(f"{srv.base}: only nodes {sorted(seen)} answered /health, {children} expected")
        node = (await srv.health()).get("node", {})
        seen[str(node.get("id"))] = int(node.get("boards_owned", -1))
        await asyncio.sleep(0.02)
    return seen


async def watch_split(srv: ServerProcess, children: int, most: dict[str, int]) -> None:
    """Keep in ``most`` the children's ``boards_owned`` when they owned the most boards in all
    (every board is active once its writer joined; one that lost its lease drops out)."""
    while True:
        owned = await children_owned(srv, children)
        if sum(owned.values()) > sum(most.values()):
            most.clear()
            most.update(owned)
        await asyncio.sleep(0.5)


async def processes(b: Bench) -> dict[str, Any]:
    p = b.params
    out = _out(
        {
            "boards": p.many_boards,
            "writer_processes": p.many_procs,
            "writers_per_board": 1,
            "max_inflight": p.max_inflight,
            "variants": {k: " ".join(("boardcast serve", *v)) for k, v in VARIANTS.items()},
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
        },
        tuple(VARIANTS),
    )
    t = time.monotonic()
    setup = await b.start_server("boardcast")
    boards = await b.make_boards(setup, p.many_boards * len(VARIANTS) * p.repeat, p.columns, 4)
    out["server"]["setup"] = await b.stop_server(setup)
    b.progress(
        f"processes: {len(boards)} boards made and their setup node stopped in {time.monotonic() - t:.1f}s"
    )
    servers = {name: await b.start_server("boardcast", args=args) for name, args in VARIANTS.items()}
    try:
        children = {name: max(1, len(srv.pids()) - 1) for name, srv in servers.items()}
        for name, srv in servers.items():
            if "--processes" in srv.args:
                await children_owned(srv, children[name])  # every child listens
        for rep in range(p.repeat):
            for name in rotated(tuple(VARIANTS), rep):
                srv = servers[name]
                mine, boards = boards[: p.many_boards], boards[p.many_boards :]
                workers = _writers(b, f"processes-{name}-", srv, [x.conn_spec() for x in mine], p.many_procs)
                owned: dict[str, int] = {}
                watch = asyncio.create_task(watch_split(srv, children[name], owned))
                try:
                    run = await b.run_window(workers, srv)
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                r = _commands_run(run, p.window_s)
                cpu_s = (run.server_cpu_pct or 0.0) / 100
                seqs = [seq for res in run.results for seq in res["last_ack_seq"].values()]
                r.update(
                    server_pids=len(srv.pids()),
                    per_server_cpu_s=r["commands_per_s"] / cpu_s if cpu_s else None,
                    board_seq_min=min(seqs, default=0),
                    board_seq_max=max(seqs, default=0),
                    boards_owned_by_child=owned,
                )
                _record(
                    b,
                    out,
                    name,
                    f"processes {name}",
                    rep,
                    r,
                    f"{r['commands_per_s']:,.0f} acked cmd/s over {len(mine)} boards, "
                    f"{r['per_server_cpu_s'] or 0:,.0f} per server CPU-s, board seq min/max "
                    f"{r['board_seq_min']}/{r['board_seq_max']}, boards by child "
                    f"{sorted(owned.values()) or '-'}, errors {r['errors']}, cpu: {_cpu(run)}",
                )
    finally:
        for name, srv in servers.items():
            out["server"][name] = {**await b.stop_server(srv), "settings": srv.settings, "args": srv.args}
    runs = out["runs"]
    out["summary"] = {
        key: {
            "one_process": _med(runs["one_process"], key),
            "two_processes": _med(runs["two_processes"], key),
            "ratio": _ratio(_med(runs["two_processes"], key), _med(runs["one_process"], key)),
        }
        for key in ("commands_per_s", "per_server_cpu_s", "server_cpu_pct")
    }
    b.progress(f"processes: --processes 2 / one process = {_num(out['summary']['commands_per_s']['ratio'])}x")
    return out
