"""The README table: medians, baselines, ratios and the targets from the performance issue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "fanout": ("≥ 100,000 deliveries/s", lambda v: v >= 100_000),
    "commands_one_board": ("≥ 10,000 cmd/s", lambda v: v >= 10_000),
    "latency": ("p99 < 5 ms", lambda v: v < 5),
    "idle_memory": ("< 16 KiB", lambda v: v < 16 * 1024),
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


def markdown_table(results: dict[str, Any]) -> str:
    m = results["machine"]
    sc = results["scenarios"]
    p = results["params"]
    mem = f"{m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else "? GiB"
    rows: list[str] = [
        f"Median of {p['repeat']} run(s), {results['mode']} mode, on {m['nproc']} x {m['cpu_model']}, "
        f"{mem} RAM, Python {m['python']}; server, PostgreSQL and load generator share the machine.",
        "",
        "| Scenario | Measure | Boardcast | Baseline | Boardcast / baseline | Target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    if "fanout" in sc:
        s = sc["fanout"]["summary"]
        v = sc["fanout"]["params"]["viewers"]
        d = s["deliveries_per_s"]
        f = s["frames_per_s"]
        mpf = s["messages_per_frame"]
        rows.append(
            f"| fanout ({v} viewers, 1 board) | event deliveries/s | {_n(d['boardcast'])} | "
            f"{_n(d['baseline'])} | {_ratio(d['ratio'])} | {_target('fanout', d['boardcast'])} |"
        )
        rows.append(
            f"| fanout | frames/s (messages per frame) | {_n(f['boardcast'])} ({_n(mpf['boardcast'], 1)}) | "
            f"{_n(f['baseline'])} ({_n(mpf['baseline'], 1)}) | {_ratio(f['ratio'])} | |"
        )
    if "commands_one_board" in sc:
        s = sc["commands_one_board"]["summary"]["commands_per_s"]
        w = sc["commands_one_board"]["params"]["writers"]
        rows.append(
            f"| commands_one_board ({w} writers) | persisted commands/s (baseline: single-row INSERT "
            f"tx/s, 1 asyncpg conn) | {_n(s['boardcast'])} | {_n(s['raw_asyncpg_inserts_per_s'])} | "
            f"{_ratio(s['ratio'])} | {_target('commands_one_board', s['boardcast'])} |"
        )
    if "commands_many_boards" in sc:
        s = sc["commands_many_boards"]["summary"]["commands_per_s"]
        nb = sc["commands_many_boards"]["params"]["boards"]
        rows.append(
            f"| commands_many_boards ({nb} boards, 1 writer each) | persisted commands/s | "
            f"{_n(s['boardcast'])} | - | - | |"
        )
    if "latency" in sc:
        s = sc["latency"]["summary"]
        lp = sc["latency"]["params"]
        ev50, ev99, ack50, ack99 = s["event_p50_ms"], s["event_p99_ms"], s["ack_p50_ms"], s["ack_p99_ms"]
        rows.append(
            f"| latency ({lp['viewers']} viewers, {lp['rate_per_s']:,.0f} cmd/s) | "
            f"send → event p50 / p99 (ms) | "
            f"{_ms(ev50['boardcast'])} / {_ms(ev99['boardcast'])} | {_ms(ev50['baseline'])} / "
            f"{_ms(ev99['baseline'])} | {_ratio(ev50['ratio'])} / {_ratio(ev99['ratio'])} | "
            f"{_target('latency', ev99['boardcast'])} |"
        )
        rows.append(
            f"| latency | send → ack p50 / p99 (ms) | "
            f"{_ms(ack50['boardcast'])} / {_ms(ack99['boardcast'])} | "
            f"{_ms(ack50['baseline'])} / {_ms(ack99['baseline'])} | {_ratio(ack50['ratio'])} / "
            f"{_ratio(ack99['ratio'])} | |"
        )
    if "idle_memory" in sc:
        s = sc["idle_memory"]["summary"]
        target = sc["idle_memory"]["params"]["connections"]
        per = s["bytes_per_connection"]["boardcast"]
        got = s["connected"]["boardcast"]
        reached = f"{got:,}" if got >= target else f"{got:,} of {target:,}"
        rows.append(
            f"| idle_memory ({reached} joined connections) | server RSS per idle connection | "
            f"{'-' if per is None else f'{per / 1024:.1f} KiB'} | - | - | {_target('idle_memory', per)} |"
        )
    if "rest" in sc:
        s = sc["rest"]["summary"]["requests_per_s"]
        rp = sc["rest"]["params"]
        conc = rp["processes"] * rp["concurrency_per_process"]
        rows.append(
            f"| rest (GET board of {rp['cards']} cards, {conc} concurrent) | requests/s | "
            f"{_n(s['boardcast'])} | - | - | |"
        )
    for name, err in results.get("failed", {}).items():
        rows.append(f"| {name} | failed: {err[:80]} | | | | |")
    for note in results.get("notes", []):
        rows.extend(["", f"Note: {note}."])
    return "\n".join(rows)
