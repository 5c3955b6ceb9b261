"""``auth_overhead``: what authentication and rate limiting cost on the REST hot path.

Two ``boardcast serve`` processes run side by side against the same PostgreSQL and Redis:

- ``no_auth`` (the baseline): ``BOARDCAST_AUTH=none``, ``BOARDCAST_RATE_LIMIT=off``;
- the guarded server: ``BOARDCAST_AUTH=jwt``, ``BOARDCAST_RATE_LIMIT=on`` with read and write
  limits no client reaches, and a Redis key prefix of this run's own (its keys are deleted
  afterwards). It is measured twice: with the access token of a registered user (``jwt``) and
  with a personal API token of the same user (``api_token``).

The same REST load workers as ``rest`` (``GET /api/v1/boards/{id}`` of a board of the same
size, the same number of processes and concurrent requests) run one window per variant, the
variants taking turns in each round (rotated, so none is always first), so that whatever the
machine's other tenants do hits all of them alike. Every answer must be 200 and, on the
guarded server, carry the rate limiter's headers; a 429 (or any other answer) fails the run.
"""

from __future__ import annotations

import uuid
from typing import Any

from bench.common import median
from bench.harness import Bench, post_json
from bench.scenarios import _cpu, _med, _merge, _num, _out, _ratio, _server, _usage
from bench.services import BenchError, ServerProcess, bench_redis_prefix, delete_redis_prefix

BASELINE = "no_auth"
VARIANTS = (BASELINE, "jwt", "api_token")

# Limits far above anything the load reaches (about 1e6 requests/s per user), so every request
# runs the limiter's script and none is refused.
NEVER_REACHED = "1000000000/60"


def guarded_settings(redis_prefix: str) -> dict[str, str]:
    return {
        "BOARDCAST_AUTH": "jwt",
        "BOARDCAST_RATE_LIMIT": "on",
        "BOARDCAST_RATE_READS": NEVER_REACHED,
        "BOARDCAST_RATE_WRITES": NEVER_REACHED,  # making the board: 55 writes in a burst
        "BOARDCAST_REDIS_PREFIX": redis_prefix,
        # the access token must outlive the scenario (15 minutes by default); its lifetime
        # costs nothing per request
        "BOARDCAST_ACCESS_TOKEN_TTL_S": "7200",
    }


async def _sign_up(srv: ServerProcess) -> tuple[str, str]:
    """Register a user on ``srv`` and give it a personal API token: (access token, API token)."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    session = await post_json(
        srv,
        "/api/v1/auth/register",
        {"email": email, "password": uuid.uuid4().hex, "name": "bench"},
        201,
    )
    access = str(session["access_token"])
    token = await post_json(
        srv, "/api/v1/users/me/tokens", {"name": "bench"}, 201, {"Authorization": f"Bearer {access}"}
    )
    return access, str(token["token"])


async def auth_overhead(b: Bench) -> dict[str, Any]:
    p = b.params
    rounds = max(p.auth_rounds, p.repeat)  # --repeat asks for more rounds, never fewer than 3
    prefix = bench_redis_prefix()
    out = _out(
        {
            "cards": p.rest_cards,
            "processes": p.rest_procs,
            "concurrency_per_process": p.rest_concurrency,
            "rounds": rounds,
            "warmup_s": p.warmup_s,
            "window_s": p.window_s,
            "redis_prefix": prefix,
        },
        VARIANTS,
    )
    try:
        async with (
            _server(b, out, "boardcast", key=BASELINE) as plain,
            _server(b, out, "boardcast", key="guarded", settings=guarded_settings(prefix)) as guarded,
        ):
            access, api_token = await _sign_up(guarded)
            auth = {"jwt": f"Bearer {access}", "api_token": f"Bearer {api_token}"}
            plain_board = await b.make_board(plain, "auth overhead", 3, p.rest_cards)
            guarded_board = await b.make_board(
                guarded, "auth overhead", 3, p.rest_cards, {"Authorization": auth["jwt"]}
            )
            for rnd in range(rounds):
                order = VARIANTS[rnd % len(VARIANTS) :] + VARIANTS[: rnd % len(VARIANTS)]
                for variant in order:
                    if variant == BASELINE:
                        srv, board_id, spec = plain, plain_board.id, {}
                    else:
                        srv, board_id = guarded, guarded_board.id
                        spec = {
                            "headers": {"Authorization": auth[variant]},
                            "require_header": "RateLimit-Limit",
                        }
                    await _window(b, out, variant, rnd, rounds, srv, board_id, spec)
    finally:
        # after both servers stopped (/health writes a key too); only keys under our prefix
        try:
            out["params"]["redis_keys_deleted"] = await delete_redis_prefix(b.redis_url, prefix)
        except Exception as e:  # they expire on their own (within ms at these limits): go on
            b.progress(f"!! could not delete the Redis keys {prefix}:*: {e!r}")
    out["summary"] = _summary(out)
    s = out["summary"]
    b.progress(
        "auth_overhead: "
        + ", ".join(
            f"{v} {_num(s['requests_per_s'][v])} GET/s (p50 {_num(s['p50_ms'][v])} "
            f"p99 {_num(s['p99_ms'][v])} ms, server CPU {_num(s['server_cpu_us_per_request'][v])} µs/request)"
            for v in VARIANTS
        )
        + "; "
        + ", ".join(
            f"{v}/{BASELINE} {_num(s['ratio'][v])} = {_num(s['overhead_pct'][v])} % overhead"
            for v in VARIANTS[1:]
        )
    )
    return out


async def _window(
    b: Bench,
    out: dict[str, Any],
    variant: str,
    rnd: int,
    rounds: int,
    srv: ServerProcess,
    board_id: str,
    extra: dict[str, Any],
) -> None:
    p = b.params
    workers = [
        b.worker(
            f"auth-{variant}{i}",
            {
                "role": "rest",
                "base": srv.base,
                "board_id": board_id,
                "concurrency": p.rest_concurrency,
                "strict": True,
                **extra,
            },
        )
        for i in range(p.rest_procs)
    ]
    run = await b.run_window(workers, srv)
    res = run.results
    m = run.metrics
    ok = sum(x["ok"] for x in res)
    r = {
        "requests_per_s": ok / p.window_s,
        "statuses": _merge(x["statuses"] for x in res),
        "p50_ms": median([x["p50_ms"] for x in res if x["p50_ms"] is not None]),
        "p99_ms": max((x["p99_ms"] for x in res if x["p99_ms"] is not None), default=None),
        "round": rnd + 1,
        **_usage(run),
    }
    # What one request costs the server in CPU: unlike requests/s, it holds still when the
    # machine's other tenants leave the server less than a core.
    cpu = run.server_cpu_pct
    r["server_cpu_us_per_request"] = cpu * 1e4 / r["requests_per_s"] if cpu and r["requests_per_s"] else None
    # The workers checked every answer; the server's own counts say the same from its side (they
    # span a little more than the window: warm-up and the requests still running at its end).
    limits = m.get("rate_limit_outcomes", {})
    if set(r["statuses"]) != {"200"} or set(m.get("http_statuses", {})) - {"200"}:
        raise BenchError(f"auth_overhead {variant}: answers other than 200: {r['statuses']} {m}")
    if variant != BASELINE and (set(limits) != {"allowed"} or limits["allowed"] < ok):
        raise BenchError(f"auth_overhead {variant}: not every request was rate limited in Redis: {limits}")
    if variant == BASELINE and limits:
        raise BenchError(f"auth_overhead {BASELINE}: the baseline server ran rate limits: {limits}")
    out["runs"][variant].append(r)
    b.progress(
        f"auth_overhead round {rnd + 1}/{rounds} {variant}: {r['requests_per_s']:,.0f} GET/s, "
        f"p50 {_num(r['p50_ms'])} ms p99 {_num(r['p99_ms'])} ms, server CPU "
        f"{_num(r['server_cpu_us_per_request'])} µs/request, limiter {limits or 'off'}, cpu: {_cpu(run)}"
    )


def _summary(out: dict[str, Any]) -> dict[str, Any]:
    runs = out["runs"]
    rps = {v: _med(runs[v], "requests_per_s") for v in VARIANTS}
    ratio = {v: _ratio(rps[v], rps[BASELINE]) for v in VARIANTS}
    cpu = {v: _med(runs[v], "server_cpu_us_per_request") for v in VARIANTS}
    # The same ratio from each round's own windows (which ran next to each other): a check on
    # the ratio of medians when the machine drifts.
    by_round = {
        v: median(
            [
                g["requests_per_s"] / a["requests_per_s"]
                for g, a in zip(runs[v], runs[BASELINE], strict=True)
                if a["requests_per_s"]
            ]
        )
        for v in VARIANTS
    }
    return {
        "requests_per_s": rps,
        "ratio": ratio,
        "overhead_pct": {v: None if x is None else (1 - x) * 100 for v, x in ratio.items()},
        "ratio_median_of_rounds": by_round,
        "p50_ms": {v: _med(runs[v], "p50_ms") for v in VARIANTS},
        "p99_ms": {v: _med(runs[v], "p99_ms") for v in VARIANTS},
        "server_cpu_us_per_request": cpu,
        "server_cpu_ratio": {v: _ratio(cpu[v], cpu[BASELINE]) for v in VARIANTS},
    }


__all__ = ["auth_overhead"]
