"""The REST rate limiter end to end across OS processes (docs/ACCESS.md, "Rate limiting"): two
real `boardcast serve` processes share one database and one Redis, and several client
processes, released together, read as one signed-in user from both nodes at once. Exactly
`count` reads are served, each RateLimit-Remaining value once, the rest refused with 429 as
documented; another account, reading in the same burst, has a bucket of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict

from server.config import Rate
from tests.conftest import free_port
from tests.identity import Account, register
from tests.processes import release_together
from tests.test_newcomer import boardcast_cmd, open_log, wait_healthy
from tests.test_ratelimit import assert_rate_headers, assert_refused
from tests.test_rest import Reply

pytestmark = pytest.mark.timeout(30)

ME = "/api/v1/users/me"
READS = Rate(40, 600)  # one read every 15 s refills: nothing comes back during the test


@contextlib.asynccontextmanager
async def serve_processes(
    count: int,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    prefix: str,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[list[str]]:
    """``count`` `boardcast serve` processes on 127.0.0.1 sharing the database, Redis and the
    key ``prefix`` (with ``extra_env`` over the defaults); yields their base URLs once each
    answers /health. Each is stopped with SIGTERM at the end (and must stop cleanly), killed
    if it does not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        BOARDCAST_HOST="127.0.0.1",
        BOARDCAST_DATA_DIR=str(tmp_path / "data"),  # not used (both URLs set); never the repo's
        BOARDCAST_AUTH="jwt",
        BOARDCAST_PASSWORD_HASH_PROFILE="fast",
        BOARDCAST_RATE_LIMIT="on",
        BOARDCAST_RATE_READS=f"{READS.count}/{READS.period_s:g}",
        BOARDCAST_REDIS_PREFIX=prefix,
    )
    env.update(extra_env or {})
    nodes: list[tuple[asyncio.subprocess.Process, str, Path]] = []
    try:
        for i in range(count):
            port, workdir = free_port(), tmp_path / f"node{i}"
            workdir.mkdir()
            log = open_log(workdir)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *boardcast_cmd(),
                    "serve",
                    env={**env, "BOARDCAST_PORT": str(port)},
                    cwd=workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            finally:
                os.close(log)
            nodes.append((proc, f"http://127.0.0.1:{port}", workdir))
        async with aiohttp.ClientSession() as http, asyncio.timeout(20):
            # both start at once (migrations run under an advisory lock); each is waited for by
            # its own /health answer, failing at once with its log if it exits
            await asyncio.gather(*(wait_healthy(p, base, http, wd) for p, base, wd in nodes))
        yield [base for _, base, _ in nodes]
        for proc, _, _ in nodes:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            codes = [await proc.wait() for proc, _, _ in nodes]
        logs = [(wd / "serve-1.log").read_text() for _, _, wd in nodes]
        assert codes == [0] * count, (codes, logs)
        assert not any("Traceback" in log for log in logs), logs
    finally:
        for proc, _, _ in nodes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# One client process: reads its plan (JSON, one line) from stdin, opens its connections to every
# node with /health (never rate limited), says "ready", waits for "go" on stdin, then sends all
# its requests at once and prints every answer as JSON.
CLIENT = """
import asyncio, json, sys
import aiohttp

async def main():
    plan = json.loads(sys.stdin.readline())
    async with aiohttp.ClientSession() as http:
        for url in plan["warm"]:
            async with http.get(url) as r:
                assert r.status == 200 and "RateLimit-Limit" not in r.headers, (url, r.status)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one(who, url, token):
            async with http.get(url, headers={"Authorization": "Bearer " + token}) as r:
                body = await r.json() if r.content_type == "application/json" else None
                return [who, url, r.status, list(r.headers.items()), body]

        answers = await asyncio.gather(*(one(*request) for request in plan["requests"]))
        print(json.dumps(answers), flush=True)

asyncio.run(main())
"""


async def run_clients(plans: list[dict[str, Any]]) -> list[tuple[str, str, Reply]]:
    """One OS process per plan, all released together; (who, url, reply) for every request."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        for _ in plans
    ]
    try:
        for p, plan in zip(procs, plans, strict=True):
            assert p.stdin is not None
            p.stdin.write(json.dumps(plan).encode() + b"\n")  # tokens on stdin, not on command lines
            await p.stdin.drain()
    except BaseException:
        for p in procs:
            p.kill()
            await p.wait()
        raise
    outputs = await release_together(procs)
    return [
        (who, url, Reply(status, CIMultiDict(headers), body))
        for out in outputs
        for who, url, status, headers, body in json.loads(out)
    ]


async def call_as(http: aiohttp.ClientSession, url: str, who: Account) -> Reply:
    async with http.get(url, headers=who.headers) as r:
        return Reply(r.status, r.headers, await r.json())


def assert_served(reply: Reply, who: Account) -> int:
    """A 200 for ``who`` with sane RateLimit-* headers; returns RateLimit-Remaining."""
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.body["id"] == who.user_id, reply.body
    assert "Retry-After" not in reply.headers
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert reply.headers[name].isdigit(), dict(reply.headers)  # whole non-negative numbers
    remaining, reset = assert_rate_headers(reply, READS.count, READS.period_s)
    # each served read pushes "full again" one interval further: after the i-th of the burst,
    # reset is i intervals, less the time the burst has taken so far
    interval = READS.period_s / READS.count
    taken = READS.count - remaining
    assert interval * taken - 5 < reset <= interval * taken, (remaining, reset)
    return remaining


async def test_two_serve_processes_and_four_client_processes_share_one_budget_exactly(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{redis_prefix}-rlproc-{uuid.uuid4().hex[:8]}"
    redis = aioredis.from_url(redis_url)
    try:
        async with (
            serve_processes(2, tmp_path, database_url, redis_url, prefix) as nodes,
            aiohttp.ClientSession() as http,
        ):
            # registering is an auth-tier request: no read is spent before the burst
            ann = await register(http, nodes[0], name="Ann")
            bob = await register(http, nodes[1], name="Bob")
            processes, ann_per_node, bob_per_node = 4, 10, 2
            plans = [
                {
                    "warm": [f"{base}/health" for base in nodes],
                    "requests": [
                        request
                        for i in range(ann_per_node)
                        for base in nodes
                        for request in (
                            [["ann", f"{base}{ME}", ann.access_token]]
                            + ([["bob", f"{base}{ME}", bob.access_token]] if i < bob_per_node else [])
                        )
                    ],
                }
                for _ in range(processes)
            ]
            answers = await run_clients(plans)

            ann_replies = [r for who, _, r in answers if who == "ann"]
            bob_replies = [r for who, _, r in answers if who == "bob"]
            # each node alone was sent `count` of Ann's reads: buckets of each node's own would
            # have served all of them
            for base in nodes:
                assert sum(who == "ann" and url.startswith(base) for who, url, _ in answers) == READS.count
            assert len(ann_replies) == 2 * READS.count
            assert {r.status for r in ann_replies} <= {200, 429}, [(r.status, r.body) for r in ann_replies]
            served = [r for r in ann_replies if r.status == 200]
            refused = [r for r in ann_replies if r.status == 429]
            assert len(served) == READS.count and len(refused) == READS.count
            assert sorted(assert_served(r, ann) for r in served) == list(range(READS.count))
            for r in refused:
                assert_refused(r, "reads", READS)  # standard error body, Retry-After, headers
                assert int(r.headers["Retry-After"]) >= 1

            # Bob read in the same burst, through the same nodes: all served, from his own bucket
            bob_remaining = [assert_served(r, bob) for r in bob_replies]
            bob_count = processes * bob_per_node * len(nodes)
            assert sorted(bob_remaining, reverse=True) == list(
                range(READS.count - 1, READS.count - 1 - bob_count, -1)
            )

            # afterwards Ann is refused by both nodes, and Bob still served by both
            for base in nodes:
                assert_refused(await call_as(http, f"{base}{ME}", ann), "reads", READS)
            after = [assert_served(await call_as(http, f"{base}{ME}", bob), bob) for base in nodes]
            assert after == [READS.count - bob_count - 1, READS.count - bob_count - 2]
            # the one budget lives in the shared Redis, under the servers' prefix
            for who in (ann, bob):
                pttl = await redis.pttl(f"{prefix}:rl:reads:user:{who.user_id}")
                assert 0 < pttl <= READS.period_s * 1000, pttl
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
