"""The README table: medians, baselines, ratios and the targets from the performance issue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "fanout": ("≥ 100,000 deliveries/s", lambda v: v >= 100_000),
    "commands_one_board": ("≥ 10,000 cmd/s", lambda v: v >= 10_000),
    "latency": ("p99 < 5 ms", lambda v: v < 5),
    "idle_memory": ("< 16 KiB", lambda v: v < 16 * 1024),
    # on the ratio with / without authentication and rate limiting
    "auth_overhead": ("< 10 % overhead", lambda v: v > 0.9),
    # reconnect_storm: seconds until the last viewer has resumed, server CPU ms per connect + join
    "reconnect_storm": ("< 2 s", lambda v: v < 2),
    "reconnect_storm_cpu": ("≤ 0.3 ms", lambda v: v <= 0.3),
    # several nodes: % more server CPU per delivery / command than one node; cross-node p99;
    # seconds from kill -9 to the first accepted command; --processes 2 / one process
    "nodes": ("forwarding < 30 % more CPU", lambda v: v < 30),
    "nodes_latency": ("p99 < 10 ms", lambda v: v < 10),
    "failover": ("< 3 s", lambda v: v < 3),
    "processes": ("> 1.6x", lambda v: v > 1.6),
    # large_board (10,000 cards): activation from PostgreSQL, and the snapshot served to a joiner
    "large_activation": ("< 200 ms", lambda v: v < 200),
    "large_snapshot": ("< 50 ms", lambda v: v < 50),
}


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _target(name: str, value: float | None) -> str:
    text, ok = TARGETS[name]
    if value is None:
        return text
    return f"{text} {'✅' if ok(value) else '❌'}"


def _row(*cells: str) -> str:
    """One table row; an empty cell is written ``| |``."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def _vs(
    *measures: dict[str, Any],
    fmt: Callable[[float | None], str] = _n,
    base: str = "baseline",
    boardcast: str = "boardcast",
) -> list[str]:
    """The Boardcast, baseline and ratio cells of one or more summary entries (several: "a / b")."""
    return [
        " / ".join(fmt(m[boardcast]) for m in measures),
        " / ".join(fmt(m[base]) for m in measures),
        " / ".join(_ratio(m["ratio"]) for m in measures),
    ]


def _auth_rows(result: dict[str, Any]) -> list[str]:
    """auth_overhead: each signed-in variant against the server without sign-in or limits."""
    s, ap = result["summary"], result["params"]
    rps, ratio, overhead = s["requests_per_s"], s["ratio"], s["overhead_pct"]
    conc = ap["processes"] * ap["concurrency_per_process"]
    rows = []
    for variant, what in (("jwt", "access token (JWT)"), ("api_token", "personal API token")):
        pct = overhead[variant]
        rows.append(
            _row(
                f"auth_overhead (GET board of {ap['cards']} cards, {conc} concurrent, {ap['rounds']} rounds)"
                if variant == "jwt"
                else "auth_overhead",
                f"requests/s with {what} + rate limit (baseline: neither); overhead "
                f"{'-' if pct is None else f'{pct:.1f} %'}",
                _n(rps[variant]),
                _n(rps["no_auth"]),
                _ratio(ratio[variant]),
                _target("auth_overhead", ratio[variant]),
            )
        )
    p50, p99 = s["p50_ms"], s["p99_ms"]
    rows.append(
        _row(
            "auth_overhead",
            "p50 / p99 (ms), JWT + rate limit vs neither",
            f"{_ms(p50['jwt'])} / {_ms(p99['jwt'])}",
            f"{_ms(p50['no_auth'])} / {_ms(p99['no_auth'])}",
            " / ".join(
                _ratio(None if m["jwt"] is None or not m["no_auth"] else m["jwt"] / m["no_auth"])
                for m in (p50, p99)
            ),
            "",
        )
    )
    cpu = s.get("server_cpu_us_per_request")
    if cpu:
        rows.append(
            _row(
                "auth_overhead",
                "server CPU per request (µs), JWT / API token + rate limit vs neither",
                f"{_n(cpu['jwt'])} / {_n(cpu['api_token'])}",
                _n(cpu["no_auth"]),
                " / ".join(_ratio(s["server_cpu_ratio"][v]) for v in ("jwt", "api_token")),
                "",
            )
        )
    return rows


def _storm_rows(result: dict[str, Any]) -> list[str]:
    """reconnect_storm: the resume storm against the aims, the fresh storm beside it."""
    s, sp = result["summary"], result["params"]

    def pair(key: str, fmt: Callable[[float | None], str]) -> str:
        return " / ".join(fmt(s[f"{ph}_{key}"]["boardcast"]) for ph in ("resume", "fresh"))

    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f} s"

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f} ms"

    def target(name: str, value: float | None) -> str:
        # The aims are for 1,000 viewers: a smaller (--quick) storm is not judged against them.
        return _target(name, value) if sp["viewers"] >= 1000 else f"{TARGETS[name][0]} (at 1,000)"

    return [
        _row(
            f"reconnect_storm ({sp['viewers']:,} viewers of 1 board, {sp['cards']} cards, "
            f"{sp['processes']} processes)",
            "time until the last has its `joined`: resume (since_seq) / fresh (snapshot)",
            pair("all_joined_s", secs),
            "-",
            "-",
            target("reconnect_storm", s["resume_all_joined_s"]["boardcast"]),
        ),
        _row(
            "reconnect_storm",
            "server CPU per connect + join, resume / fresh (joins per access read: "
            f"{pair('joins_per_access_read', lambda x: _n(x))})",
            pair("server_cpu_ms_per_join", ms),
            "-",
            "-",
            target("reconnect_storm_cpu", s["resume_server_cpu_ms_per_join"]["boardcast"]),
        ),
    ]


def _nodes_rows(sc: dict[str, Any]) -> list[str]:
    """Several nodes: each spread against one node, the cross-node latency against the
    owner's, the failover time and ``--processes 2`` against one process."""
    rows: list[str] = []
    for name, what, key in (
        ("nodes_fanout", "deliveries/s", "deliveries_per_s"),
        ("nodes_commands", "acked commands/s", "commands_per_s"),
    ):
        if name not in sc:
            continue
        s, np = sc[name]["summary"], sc[name]["params"]
        size = f"{np['viewers']} viewers" if "viewers" in np else f"{np['writers']} writers"
        one = s.get("1_node", {})
        for k in (2, 3):
            m = s.get(f"{k}_nodes")
            if m is None:
                continue
            pct = m["cpu_overhead_pct"]
            rows.append(
                _row(
                    f"{name} ({size} on {k} nodes; baseline: on 1)" if k == 2 else name,
                    f"{what} on {k} nodes (per server CPU-s: {_n(m['per_server_cpu_s'])} vs "
                    f"{_n(one.get('per_server_cpu_s'))}; "
                    f"{'-' if pct is None else f'{pct:+.0f} %'} CPU per unit)",
                    _n(m[key]),
                    _n(one.get(key)),
                    _ratio(m["per_cpu_ratio_to_1_node"]),
                    "" if pct is None else _target("nodes", pct),
                )
            )
    if "nodes_latency" in sc:
        s, lp = sc["nodes_latency"]["summary"], sc["nodes_latency"]["params"]
        ev50, ev99 = s["event_p50_ms"], s["event_p99_ms"]
        for label, m50, m99, target in (
            ("send → event", ev50, ev99, True),
            ("send → ack", s["ack_p50_ms"], s["ack_p99_ms"], False),
        ):
            rows.append(
                _row(
                    f"nodes_latency ({lp['viewers']} viewers on 2 nodes, {lp['rate_per_s']:,.0f} cmd/s)"
                    if target
                    else "nodes_latency",
                    f"{label} p50 / p99 (ms), writer on the other node (baseline: on the owner)",
                    *_vs(m50, m99, fmt=_ms, boardcast="other_node", base="owner"),
                    _target("nodes_latency", m99["other_node"]) if target else "",
                )
            )
    if "failover" in sc:
        s, fp = sc["failover"]["summary"], sc["failover"]["params"]
        first = s["first_ack_after_kill_s"]
        rows.append(
            _row(
                f"failover ({fp['runs']} runs, default settings)",
                "kill -9 of the owner → first accepted command on another node (s; max "
                f"{_ms(first['max'])}; told to leave after {_ms(s['left_after_kill_s']['boardcast'])})",
                _ms(first["boardcast"]),
                "-",
                "-",
                _target("failover", first["boardcast"]),
            )
        )
    if "processes" in sc:
        s, pp = sc["processes"]["summary"], sc["processes"]["params"]
        c = s["commands_per_s"]
        rows.append(
            _row(
                f"processes ({pp['boards']} boards, 1 writer each)",
                "acked commands/s, `serve --processes 2` (baseline: `serve`); per server CPU-s "
                f"{_n(s['per_server_cpu_s']['two_processes'])} vs {_n(s['per_server_cpu_s']['one_process'])}",
                _n(c["two_processes"]),
                _n(c["one_process"]),
                _ratio(c["ratio"]),
                _target("processes", c["ratio"]),
            )
        )
    return rows
def _large_rows(result: dict[str, Any]) -> list[str]:
    """large_board: activation, snapshot (fresh / cached, both encodings), REST, commands against
    a 20-card board at the same rate, memory."""
    s, lp = result["summary"], result["params"]

    def v(key: str) -> float | None:
        value: float | None = s[key]["boardcast"]
        return value

    def pair(*keys: str) -> str:
        return " / ".join(_ms(v(k)) for k in keys)

    def worst(*keys: str) -> float | None:
        return max((x for x in map(v, keys) if x is not None), default=None)

    size = s.get("snapshot_bytes", {})
    mib = " / ".join(f"{size[e] / 2**20:.1f}" for e in ("msgpack", "json") if e in size)
    rss = v("rss_activation_delta_bytes")
    ack = (s["large_ack_p50_ms"], s["large_ack_p99_ms"])
    ev = (s["large_event_p50_ms"], s["large_event_p99_ms"])
    name = f"large_board ({lp['cards']:,} cards, {lp['columns']} columns)"
    return [
        _row(
            name,
            "activation from PostgreSQL, server (ms); first join after a fresh start, client (ms)",
            pair("activation_ms", "cold_join_ms"),
            "-",
            "-",
            _target("large_activation", v("activation_ms")),
        ),
        _row(
            "large_board",
            "snapshot after a change, server (ms): msgpack / JSON (only changed entities encoded)",
            pair("snapshot_msgpack_server_ms", "snapshot_json_server_ms"),
            "-",
            "-",
            _target("large_snapshot", worst("snapshot_msgpack_server_ms", "snapshot_json_server_ms")),
        ),
        _row(
            "large_board",
            "first snapshot, encoded whole, server (ms): msgpack / JSON",
            pair("first_snapshot_msgpack_server_ms", "first_snapshot_json_server_ms"),
            "-",
            "-",
            _target(
                "large_snapshot", worst("first_snapshot_msgpack_server_ms", "first_snapshot_json_server_ms")
            ),
        ),
        _row(
            "large_board",
            f"join → joined, client (ms), after a change / unchanged: msgpack / JSON ({mib} MiB)",
            pair(
                "join_msgpack_fresh_ms", "join_msgpack_cached_ms", "join_json_fresh_ms", "join_json_cached_ms"
            ),
            "-",
            "-",
            "",
        ),
        _row(
            "large_board",
            f"REST GET of the board: requests/s, p50 / p99 (ms), "
            f"{lp['rest_processes'] * lp['rest_concurrency_per_process']} concurrent",
            f"{_n(v('rest_requests_per_s'), 1)}, {pair('rest_p50_ms', 'rest_p99_ms')}",
            "-",
            "-",
            "",
        ),
        _row(
            "large_board",
            f"send → ack p50 / p99 (ms) at {lp['command_rate_per_s']:,.0f} cmd/s (baseline: 20-card board)",
            *_vs(*ack, fmt=_ms),
            "",
        ),
        _row("large_board", "send → event p50 / p99 (ms)", *_vs(*ev, fmt=_ms), ""),
        _row(
            "large_board",
            "server RSS added by activating the board",
            "-" if rss is None else f"{rss / 2**20:.1f} MiB",
            "-",
            "-",
            "",
        ),
    ]


def markdown_table(results: dict[str, Any]) -> str:
    m = results["machine"]
    sc = results["scenarios"]
    p = results["params"]
    mem = f"{m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else "? GiB"
    server_py = m.get("server_python", m["python"])
    rows: list[str] = [
        f"Median of {p['repeat']} run(s), {results['mode']} mode, on {m['nproc']} x {m['cpu_model']}, "
        f"{mem} RAM, Python {m['python']}"
        + (f" (server: Python {server_py})" if server_py != m["python"] else "")
        + "; server, PostgreSQL and load generator share the machine.",
        "",
        "| Scenario | Measure | Boardcast | Baseline | Boardcast / baseline | Target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    if "fanout" in sc:
        s = sc["fanout"]["summary"]
        v = sc["fanout"]["params"]["viewers"]
        d, f, mpf = s["deliveries_per_s"], s["frames_per_s"], s["messages_per_frame"]
        rows.append(
            _row(
                f"fanout ({v} viewers, 1 board)",
                "event deliveries/s",
                *_vs(d),
                _target("fanout", d["boardcast"]),
            )
        )
        rows.append(
            _row(
                "fanout",
                "frames/s (messages per frame)",
                *(f"{_n(f[k])} ({_n(mpf[k], 1)})" for k in ("boardcast", "baseline")),
                _ratio(f["ratio"]),
                "",
            )
        )
    if "commands_one_board" in sc:
        s = sc["commands_one_board"]["summary"]["commands_per_s"]
        w = sc["commands_one_board"]["params"]["writers"]
        rows.append(
            _row(
                f"commands_one_board ({w} writers)",
                "persisted commands/s (baseline: single-row INSERT tx/s, 1 asyncpg conn)",
                *_vs(s, base="raw_asyncpg_inserts_per_s"),
                _target("commands_one_board", s["boardcast"]),
            )
        )
    if "commands_many_boards" in sc:
        s = sc["commands_many_boards"]["summary"]["commands_per_s"]
        nb = sc["commands_many_boards"]["params"]["boards"]
        rows.append(
            _row(
                f"commands_many_boards ({nb} boards, 1 writer each)",
                "persisted commands/s",
                _n(s["boardcast"]),
                "-",
                "-",
                "",
            )
        )
    if "latency" in sc:
        s = sc["latency"]["summary"]
        lp = sc["latency"]["params"]
        ev50, ev99, ack50, ack99 = s["event_p50_ms"], s["event_p99_ms"], s["ack_p50_ms"], s["ack_p99_ms"]
        rows.append(
            _row(
                f"latency ({lp['viewers']} viewers, {lp['rate_per_s']:,.0f} cmd/s)",
                "send → event p50 / p99 (ms)",
                *_vs(ev50, ev99, fmt=_ms),
                _target("latency", ev99["boardcast"]),
            )
        )
        rows.append(_row("latency", "send → ack p50 / p99 (ms)", *_vs(ack50, ack99, fmt=_ms), ""))
    if "idle_memory" in sc:
        s = sc["idle_memory"]["summary"]
        target = sc["idle_memory"]["params"]["connections"]
        per = s["bytes_per_connection"]["boardcast"]
        got = s["connected"]["boardcast"]
        reached = f"{got:,}" if got >= target else f"{got:,} of {target:,}"
        rows.append(
            _row(
                f"idle_memory ({reached} joined connections)",
                "server RSS per idle connection",
                "-" if per is None else f"{per / 1024:.1f} KiB",
                "-",
                "-",
                _target("idle_memory", per),
            )
        )
    if "rest" in sc:
        s = sc["rest"]["summary"]["requests_per_s"]
        rp = sc["rest"]["params"]
        conc = rp["processes"] * rp["concurrency_per_process"]
        rows.append(
            _row(
                f"rest (GET board of {rp['cards']} cards, {conc} concurrent)",
                "requests/s",
                _n(s["boardcast"]),
                "-",
                "-",
                "",
            )
        )
    if "auth_overhead" in sc:
        rows.extend(_auth_rows(sc["auth_overhead"]))
    if "reconnect_storm" in sc:
        rows.extend(_storm_rows(sc["reconnect_storm"]))
    rows.extend(_nodes_rows(sc))
    if "large_board" in sc:
        rows.extend(_large_rows(sc["large_board"]))
    for name, err in results.get("failed", {}).items():
        rows.append(_row(name, f"failed: {err[:80]}", "", "", "", ""))
    for note in results.get("notes", []):
        rows.extend(["", f"Note: {note}."])
    return "\n".join(rows)
