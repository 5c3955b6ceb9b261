"""Rate limiting (docs/ACCESS.md, "Rate limiting"): the Redis GCRA limiter against a real Redis
(exact counts across OS processes, refill, failing fast when Redis is gone or hangs), the
in-process bucket, who the client is behind proxies; and servers enforcing it: one budget
across nodes, the RateLimit-* headers and 429s, Redis outages, trusted proxies."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from server.config import Rate, load_settings
from server.ratelimit import (
    Decision,
    LocalBucket,
    RateLimiter,
    RateLimiterUnavailable,
    address_bucket,
    client_ip,
)
from tests.conftest import RunningServer, ServerFactory, free_port
from tests.identity import PASSWORD
from tests.processes import release_together
from tests.test_rest import Reply, assert_error, call

REPO = Path(__file__).resolve().parents[1]


def unique(name: str = "k") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def limiter(client: aioredis.Redis, redis_prefix: str) -> RateLimiter:
    return RateLimiter(client, redis_prefix)


async def checks(limiter: RateLimiter, n: int, tier: str, key: str, rate: Rate) -> list[Decision]:
    return [await limiter.check(tier, key, rate) for _ in range(n)]


# ---- the Redis limiter ---------------------------------------------------------------------


async def test_a_burst_of_count_then_refusals(limiter: RateLimiter, client: aioredis.Redis) -> None:
    rate, key = Rate(5, 600), unique()
    decisions = await checks(limiter, 7, "reads", key, rate)
    allowed, refused = decisions[:5], decisions[5:]
    assert [d.allowed for d in allowed] == [True] * 5
    assert [d.remaining for d in allowed] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after_s == 0.0 for d in decisions[:5])
    # each allowed request pushes "full again" one emission interval (120 s) further out
    for i, d in enumerate(allowed, start=1):
        assert 120 * i - 1 < d.reset_s <= 120 * i
    for d in refused:
        assert not d.allowed and d.remaining == 0 and d.limit == 5
        assert 119 < d.retry_after_s <= 120  # one interval until a request fits again
        assert 599 < d.reset_s <= 600  # refusals take nothing
    # the bucket expires when it would be full again, not before and not long after
    pttl = await client.pttl(limiter.redis_key("reads", key))
    assert 599_000 < pttl <= 600_000


async def test_concurrent_checks_in_one_process_are_exact(limiter: RateLimiter) -> None:
    rate, key = Rate(5, 600), unique()
    decisions = await asyncio.gather(*(limiter.check("writes", key, rate) for _ in range(40)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 5
    assert sorted(d.remaining for d in allowed) == [0, 1, 2, 3, 4]


async def test_the_bucket_refills(limiter: RateLimiter) -> None:
    rate, key = Rate(4, 0.4), unique()  # one request per 100 ms
    assert [d.allowed for d in await checks(limiter, 5, "auth", key, rate)] == [True] * 4 + [False]
    refused = await limiter.check("auth", key, rate)
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.1
    await asyncio.sleep(refused.retry_after_s + 0.01)
    again = await limiter.check("auth", key, rate)
    assert again.allowed and again.remaining == 0
    await asyncio.sleep(0.45)  # more than a full period: the whole burst is back, no more
    assert [d.allowed for d in await checks(limiter, 5, "auth", key, rate)] == [True] * 4 + [False]


async def test_tiers_and_keys_are_independent(limiter: RateLimiter) -> None:
    rate, key, other = Rate(2, 600), unique(), unique()
    assert [d.allowed for d in await checks(limiter, 3, "reads", key, rate)] == [True, True, False]
    assert [d.remaining for d in await checks(limiter, 2, "writes", key, rate)] == [1, 0]
    assert [d.remaining for d in await checks(limiter, 2, "reads", other, rate)] == [1, 0]
    assert not (await limiter.check("reads", key, rate)).allowed


@pytest.mark.parametrize(
    "key",
    ["x" * 101, "email:ann smith@example.com", "line\nbreak", "tab\there", "ünïcode@example.com", "a#b", ""],
)
async def test_unsafe_keys_are_hashed(limiter: RateLimiter, client: aioredis.Redis, key: str) -> None:
    redis_key = limiter.redis_key("auth", key)
    prefix = redis_key[: redis_key.index(":rl:auth:") + len(":rl:auth:")]
    hashed = redis_key[len(prefix) :]
    assert hashed.startswith("#") and len(hashed) == 65 and hashed[1:].isalnum()
    assert limiter.redis_key("auth", key + "x") != redis_key
    decision = await limiter.check("auth", key, Rate(3, 600))
    assert decision.remaining == 2
    assert await client.exists(redis_key) == 1


def test_plain_keys_are_kept(limiter: RateLimiter, redis_prefix: str) -> None:
    for key in ("ip:127.0.0.1", "ip:2001:db8::1", "user:00000000-0000-4000-8000-000000000001", "x" * 100):
        assert limiter.redis_key("reads", key) == f"{redis_prefix}:rl:reads:{key}"


async def test_a_cancelled_check_leaves_the_limiter_working(limiter: RateLimiter) -> None:
    rate, key = Rate(3, 600), unique()
    task = asyncio.create_task(limiter.check("reads", key, rate))
    await asyncio.sleep(0)  # queued, and the batch is on its way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    decisions = await checks(limiter, 4, "reads", key, rate)
    # the cancelled check may or may not have reached Redis; whatever it did, counting is exact
    taken = 3 - (decisions[0].remaining + 1)
    assert taken in (0, 1)
    assert [d.allowed for d in decisions] == [True] * (3 - taken) + [False] * (1 + taken)


# ---- several OS processes against one bucket -------------------------------------------------

CHILD = """
import asyncio, json, sys
import redis.asyncio as aioredis
from server.config import Rate, load_settings
from server.ratelimit import RateLimiter

async def main(url, prefix, key, count, n):
    client = aioredis.from_url(url)
    limiter = RateLimiter(client, prefix)
    await limiter.check("warmup", key, Rate(1, 1))  # connected, script loaded
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    decisions = await asyncio.gather(*(limiter.check("reads", key, Rate(count, 600)) for _ in range(n)))
    print(json.dumps([[d.allowed, d.remaining] for d in decisions]), flush=True)
    await client.aclose()

url, prefix, key, count, n = sys.argv[1:]
asyncio.run(main(url, prefix, key, int(count), int(n)))
"""


async def test_processes_sharing_redis_allow_exactly_count(redis_url: str, redis_prefix: str) -> None:
    key, count, per_process, processes = unique(), 50, 40, 4
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            redis_url,
            redis_prefix,
            key,
            str(count),
            str(per_process),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = [json.loads(out) for out in await release_together(procs)]  # all fire at once
    decisions = [d for result in results for d in result]
    assert len(decisions) == processes * per_process
    remaining = sorted(rem for allowed, rem in decisions if allowed)
    assert remaining == list(range(count))  # exactly `count` allowed, each remaining value once
    assert all(rem == 0 for allowed, rem in decisions if not allowed)


# ---- Redis gone, Redis hanging ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def redis_process(port: int, workdir: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A redis-server of this test's own on 127.0.0.1:port; always resumed and stopped."""
    proc = await asyncio.create_subprocess_exec(
        "redis-server",
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(workdir)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            while b"Ready to accept connections" not in await proc.stdout.readline():
                pass
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        await proc.communicate()


async def timed_check(limiter: RateLimiter, key: str, rate: Rate) -> tuple[Decision | Exception, float]:
    started = time.monotonic()
    try:
        result: Decision | Exception = await limiter.check("reads", key, rate)
    except RateLimiterUnavailable as e:
        result = e
    return result, time.monotonic() - started


async def test_unreachable_redis_fails_fast_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    limiter = RateLimiter(client, "bctest-private")
    rate, key = Rate(3, 600), unique()
    try:
        for _ in range(3):
            result, elapsed = await timed_check(limiter, key, rate)
            assert isinstance(result, RateLimiterUnavailable) and elapsed < 1
        results = await asyncio.gather(*(timed_check(limiter, key, rate) for _ in range(10)))
        assert all(isinstance(r, RateLimiterUnavailable) and t < 1 for r, t in results)
        async with redis_process(port, tmp_path):
            # a fresh server: no script loaded yet (NOSCRIPT, then loaded) and an empty bucket
            decisions = await asyncio.gather(*(limiter.check("reads", key, rate) for _ in range(5)))
            assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1, 2]
    finally:
        await client.aclose()


async def test_hanging_redis_fails_within_the_timeout_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    limiter = RateLimiter(client, "bctest-private", timeout_s=0.25)
    rate, key = Rate(10, 600), unique()
    try:
        async with redis_process(port, tmp_path) as proc:
            assert (await limiter.check("reads", key, rate)).remaining == 9
            proc.send_signal(signal.SIGSTOP)
            try:
                result, elapsed = await timed_check(limiter, key, rate)
                assert isinstance(result, RateLimiterUnavailable)
                assert 0.2 < elapsed < 1
                # many at once (a batch, and checks queued behind it) fail as fast
                started = time.monotonic()
                results = await asyncio.gather(*(timed_check(limiter, key, rate) for _ in range(20)))
                assert all(isinstance(r, RateLimiterUnavailable) and t < 1 for r, t in results)
                assert time.monotonic() - started < 1
            finally:
                proc.send_signal(signal.SIGCONT)
            # Redis answers again. The check sent before the limiter gave up may or may not
            # have been run once the server resumed; the bucket is kept either way ...
            after = await limiter.check("reads", key, rate)
            assert after.allowed and after.remaining in (7, 8)
            # ... and decisions are exact again
            fresh = unique()
            decisions = await asyncio.gather(*(limiter.check("reads", fresh, rate) for _ in range(12)))
            assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    finally:
        await client.aclose()


async def test_a_restarted_redis_is_used_at_once(tmp_path: Path) -> None:
    port = free_port()
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    limiter = RateLimiter(client, "bctest-private")
    rate, key = Rate(3, 600), unique()
    try:
        async with redis_process(port, tmp_path):
            assert (await limiter.check("reads", key, rate)).remaining == 2
        async with redis_process(port, tmp_path):
            # the limiter's connection died with the old server: the first check after the
            # restart must not be refused for that (a login would get 503)
            assert (await limiter.check("reads", key, rate)).remaining == 2  # nothing was saved
    finally:
        await client.aclose()


async def test_flushed_scripts_are_loaded_again(tmp_path: Path) -> None:
    port = free_port()
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    limiter = RateLimiter(client, "bctest-private")
    rate, key = Rate(6, 600), unique()
    try:
        async with redis_process(port, tmp_path):
            assert (await limiter.check("reads", key, rate)).remaining == 5
            await client.script_flush()  # a server of this test's own: nobody else's scripts
            decisions = await asyncio.gather(*(limiter.check("reads", key, rate) for _ in range(8)))
            assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1, 2, 3, 4]
            await client.script_flush()
            assert not (await limiter.check("reads", key, rate)).allowed
    finally:
        await client.aclose()


# ---- the in-process bucket ------------------------------------------------------------------


def test_local_bucket_counts_and_refills() -> None:
    bucket = LocalBucket(Rate(5, 10))  # one request per 2 s
    t = 1000.0
    assert [bucket.take(t) for _ in range(5)] == [0.0] * 5
    assert bucket.take(t) == pytest.approx(2.0)
    assert bucket.take(t + 1.5) == pytest.approx(0.5)  # refused requests take nothing
    assert bucket.take(t + 2.0) == 0.0
    assert bucket.take(t + 2.0) == pytest.approx(2.0)
    # after a full period idle the burst is back, and no more than the burst
    later = t + 100
    assert [bucket.take(later) for _ in range(5)] == [0.0] * 5
    assert bucket.take(later) == pytest.approx(2.0)


def test_local_bucket_allows_exactly_count_when_the_interval_does_not_divide() -> None:
    for count, period in ((3, 1.0), (7, 1.0), (100, 1.0), (20, 1.0), (600, 60.0)):
        bucket = LocalBucket(Rate(count, period))
        now = 12345.678
        assert all(bucket.take(now) == 0.0 for _ in range(count)), (count, period)
        assert bucket.take(now) == pytest.approx(period / count), (count, period)
        now += period / count
        assert bucket.take(now) == 0.0
        assert bucket.take(now) > 0


def test_local_bucket_sustained_rate() -> None:
    bucket = LocalBucket(Rate(20, 1))
    allowed = sum(bucket.take(i * 0.001) == 0.0 for i in range(10_000))  # 1000/s for 9.999 s
    assert allowed == 20 + 199  # the burst, then one per 50 ms


# ---- client address -------------------------------------------------------------------------

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "client"),
    [
        # no trusted proxies: the header is whatever the client wrote
        ("203.0.113.7", "198.51.100.1", (), "203.0.113.7"),
        ("203.0.113.7", None, (), "203.0.113.7"),
        (None, "198.51.100.1", PROXIES, "unknown"),
        # a peer that is not a trusted proxy: the header is ignored
        ("203.0.113.7", "198.51.100.1", PROXIES, "203.0.113.7"),
        # one trusted proxy
        ("10.0.0.2", "198.51.100.1", PROXIES, "198.51.100.1"),
        ("10.0.0.2", " 198.51.100.1 ", PROXIES, "198.51.100.1"),
        # a chain of trusted proxies, read from the right
        ("10.0.0.2", "198.51.100.1, 10.1.1.1, 10.2.2.2", PROXIES, "198.51.100.1"),
        # spoofed entries left of the real client are ignored
        ("10.0.0.2", "1.2.3.4, 5.6.7.8, 198.51.100.1, 10.1.1.1", PROXIES, "198.51.100.1"),
        ("10.0.0.2", "10.9.9.9, 198.51.100.1", PROXIES, "198.51.100.1"),
        # several headers joined with ","
        ("10.0.0.2", "1.2.3.4,198.51.100.1,10.1.1.1", PROXIES, "198.51.100.1"),
        # only trusted addresses: the furthest proxy is the client
        ("10.0.0.2", "10.1.1.1, 10.2.2.2", PROXIES, "10.1.1.1"),
        # a trusted proxy that sent no header
        ("10.0.0.2", None, PROXIES, "10.0.0.2"),
        ("10.0.0.2", "", PROXIES, "10.0.0.2"),
        # IPv6
        ("2001:db8:ffff::1", "2001:db8:1::42", PROXIES, "2001:db8:1::42"),
        ("2001:db8:ffff::1", "2001:DB8:1:0:0:0:0:42", PROXIES, "2001:db8:1::42"),
        ("2001:db8:ffff::1", "198.51.100.1, 2001:db8:ffff::9", PROXIES, "198.51.100.1"),
        ("10.0.0.2", "2001:db8:1::42", PROXIES, "2001:db8:1::42"),
        ("2001:db8:1::42", "198.51.100.1", PROXIES, "2001:db8:1::42"),
        # an IPv4 peer as a dual-stack socket reports it
        ("::ffff:10.0.0.2", "198.51.100.1", PROXIES, "198.51.100.1"),
        # malformed entries stop the walk at the last trusted hop
        ("10.0.0.2", "198.51.100.1, garbage", PROXIES, "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1, not-an-ip, 10.1.1.1", PROXIES, "10.1.1.1"),
        ("10.0.0.2", "198.51.100.1, , 10.1.1.1", PROXIES, "10.1.1.1"),
        ("10.0.0.2", "198.51.100.1:4711", PROXIES, "10.0.0.2"),
        ("10.0.0.2", "[2001:db8:1::42]", PROXIES, "10.0.0.2"),
        ("10.0.0.2", "unknown", PROXIES, "10.0.0.2"),
        ("10.0.0.2", "999.1.1.1", PROXIES, "10.0.0.2"),
        # but garbage left of the client does not matter
        ("10.0.0.2", "garbage, 198.51.100.1", PROXIES, "198.51.100.1"),
    ],
)
def test_client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    client: str,
) -> None:
    assert client_ip(peer, forwarded_for, trusted) == client


def test_client_ip_with_a_trusted_single_address() -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"),)
    assert client_ip("127.0.0.1", "198.51.100.1", trusted) == "198.51.100.1"
    assert client_ip("127.0.0.2", "198.51.100.1", trusted) == "127.0.0.2"


# ---- the server: REST tiers across nodes, Redis outages, proxies ---------------------------

BOARDS = "/api/v1/boards"
LOGOUT = "/api/v1/auth/logout"  # public: an anonymous write, counted per client address
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def limited(start_server: ServerFactory, redis_prefix: str) -> ServerFactory:
    """Servers with REST limits on; each test's buckets under a prefix of its own (the servers
    a test starts share it unless it says otherwise)."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"

    async def start(**overrides: Any) -> RunningServer:
        overrides.setdefault("redis_prefix", prefix)
        return await start_server(rate_limit=True, **overrides)

    return start


def assert_rate_headers(reply: Reply, limit: int, period_s: float) -> tuple[int, int]:
    """RateLimit-* present and sane; returns (remaining, reset)."""
    assert int(reply.headers["RateLimit-Limit"]) == limit, reply.headers
    remaining, reset = int(reply.headers["RateLimit-Remaining"]), int(reply.headers["RateLimit-Reset"])
    assert 0 <= remaining < limit
    assert 0 < reset <= period_s
    return remaining, reset


def assert_refused(reply: Reply, tier: str, rate: Rate) -> None:
    """429 as documented for a bucket that was just emptied."""
    err = assert_error(reply, 429, "rate_limited")
    interval = rate.period_s / rate.count
    assert err["details"]["tier"] == tier, err
    assert interval - 5 < err["details"]["retry_after_s"] <= interval, err
    assert int(reply.headers["Retry-After"]) == math.ceil(err["details"]["retry_after_s"])
    assert assert_rate_headers(reply, rate.count, rate.period_s)[0] == 0
    assert int(reply.headers["RateLimit-Reset"]) > rate.period_s - 5


def assert_unlimited(reply: Reply) -> None:
    assert not any(h in reply.headers for h in (*RATE_HEADERS, "Retry-After")), dict(reply.headers)


HTTP_CHILD = """
import asyncio, json, sys
import aiohttp

async def main(plan):
    async with aiohttp.ClientSession() as http:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one(method, url):
            async with http.request(method, url) as r:
                body = await r.json() if r.content_type == "application/json" else None
                return [url, r.status, dict(r.headers), body]

        answers = await asyncio.gather(*(one(method, url) for method, url in plan))
        print(json.dumps(answers), flush=True)

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def run_clients(plans: list[list[tuple[str, str]]]) -> list[tuple[str, Reply]]:
    """Each plan's requests sent at once from an OS process of its own, every process
    released together; returns (url, reply) for every request."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HTTP_CHILD,
            json.dumps(plan),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for plan in plans
    ]
    outputs = await release_together(procs)
    return [
        (url, Reply(status, CIMultiDict(headers), body))
        for out in outputs
        for url, status, headers, body in json.loads(out)
    ]


async def test_two_servers_share_the_limits_of_one_caller(limited: ServerFactory) -> None:
    reads, writes = Rate(20, 600), Rate(10, 600)
    nodes = [await limited(rate_reads=reads, rate_writes=writes) for _ in range(2)]
    # three client processes, each sending 12 reads and 8 writes at once, spread over both nodes.
    # Development mode: every read is the development user's (`user:<id>`); the logouts are
    # anonymous, so all of them are 127.0.0.1's (`ip:127.0.0.1`).
    plans = [
        [("GET", f"{nodes[i % 2].base}{BOARDS}") for i in range(12)]
        + [("POST", f"{nodes[i % 2].base}{LOGOUT}") for i in range(8)]
        for _ in range(3)
    ]
    answers = await run_clients(plans)
    assert len(answers) == 3 * 20
    for tier, rate, path, ok in (("reads", reads, BOARDS, 200), ("writes", writes, LOGOUT, 401)):
        replies = [r for url, r in answers if url.endswith(path)]
        served = [r for r in replies if r.status != 429]
        assert [r.status for r in served] == [ok] * rate.count, [(r.status, r.body) for r in served]
        for r in served:
            assert_rate_headers(r, rate.count, rate.period_s)
            assert "Retry-After" not in r.headers
        # one bucket for both nodes: each remaining value exactly once
        assert sorted(int(r.headers["RateLimit-Remaining"]) for r in served) == list(range(rate.count))
        refused = [r for r in replies if r.status == 429]
        assert len(refused) == len(replies) - rate.count
        for r in refused:
            assert_refused(r, tier, rate)
        # buckets of each node's own would have served more than that
        per_node = [sum(u == f"{node.base}{path}" for u, _ in answers) for node in nodes]
        assert sum(min(n, rate.count) for n in per_node) > rate.count, per_node


async def test_websocket_upgrades_are_reads_and_health_is_never_limited(
    limited: ServerFactory, http: aiohttp.ClientSession
) -> None:
    reads = Rate(3, 600)
    srv = await limited(rate_reads=reads)
    ws = await http.ws_connect(srv.ws_url, protocols=("boardcast.v1.json",))
    await ws.close()
    remaining = [
        assert_rate_headers(await call(http, "GET", f"{srv.base}{BOARDS}"), 3, 600)[0] for _ in range(2)
    ]
    assert remaining == [1, 0]  # the upgrade took the first
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(srv.ws_url, protocols=("boardcast.v1.json",))
    assert refused.value.status == 429
    assert_refused(await call(http, "GET", f"{srv.base}{BOARDS}"), "reads", reads)
    for path in ("/health", "/metrics", "/openapi.json"):
        async with http.get(f"{srv.base}{path}") as r:
            assert r.status == 200, path
            assert not any(h in r.headers for h in RATE_HEADERS), path


async def scrape_metrics(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, tuple[Any, ...]], float]:
    async with http.get(f"{base}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def decisions(samples: dict[tuple[str, tuple[Any, ...]], float], tier: str, outcome: str) -> float:
    key = ("boardcast_rate_limit_decisions_total", (("outcome", outcome), ("tier", tier)))
    return samples.get(key, 0.0)


async def test_redis_outage_serves_reads_and_writes_and_refuses_sign_in(
    limited: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    register = {"email": f"{unique('ann')}@example.test", "password": PASSWORD, "name": "Ann"}
    login = {"email": register["email"], "password": PASSWORD}
    async with redis_process(port, tmp_path) as proc:
        srv = await limited(redis_url=url, rate_reads=Rate(100, 60), rate_auth=Rate(10, 60))
        assert_rate_headers(await call(http, "GET", f"{srv.base}{BOARDS}"), 100, 60)
        assert (await call(http, "POST", f"{srv.base}/api/v1/auth/register", json=register)).status == 201
        samples = await scrape_metrics(http, srv.base)
        assert samples[("boardcast_rate_limiter_up", ())] == 1

        # Redis hangs: each request waits for the limiter's 250 ms at most, then goes on
        proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = await call(http, "GET", f"{srv.base}{BOARDS}")
            assert r.status == 200 and time.monotonic() - started < 1.5
            assert_unlimited(r)
            started = time.monotonic()
            r = await call(http, "POST", f"{srv.base}/api/v1/auth/login", json=login)
            assert_error(r, 503, "unavailable")
            assert int(r.headers["Retry-After"]) >= 1 and time.monotonic() - started < 1.5
        finally:
            proc.send_signal(signal.SIGCONT)

    # Redis is gone
    r = await call(http, "GET", f"{srv.base}{BOARDS}")
    assert r.status == 200
    assert_unlimited(r)
    r = await call(http, "POST", f"{srv.base}{BOARDS}", json={"title": "written while Redis is down"})
    assert r.status == 201, r.body
    assert_unlimited(r)
    for path, body in (("login", login), ("register", {**register, "email": f"{unique('bob')}@x.io"})):
        r = await call(http, "POST", f"{srv.base}/api/v1/auth/{path}", json=body)
        assert_error(r, 503, "unavailable")
        assert int(r.headers["Retry-After"]) >= 1
    # still ready for traffic: Redis alone down is degraded, not down
    status_body = await call(http, "GET", f"{srv.base}/health")
    assert status_body.status == 200
    assert status_body.body["status"] == "degraded", status_body.body
    assert status_body.body["rate_limiter"]["ok"] is False, status_body.body
    samples = await scrape_metrics(http, srv.base)
    assert samples[("boardcast_rate_limiter_up", ())] == 0
    assert decisions(samples, "reads", "fail_open") == 2  # one while hanging, one since
    assert decisions(samples, "writes", "fail_open") == 1
    assert decisions(samples, "auth", "fail_closed") == 3
    assert decisions(samples, "reads", "allowed") == 1

    # Redis is back (empty: nothing was saved): limits, headers and sign-in return
    async with redis_process(port, tmp_path):
        r = await call(http, "GET", f"{srv.base}{BOARDS}")
        assert r.status == 200
        assert assert_rate_headers(r, 100, 60)[0] == 99
        r = await call(http, "POST", f"{srv.base}/api/v1/auth/login", json=login)
        assert r.status == 200, r.body
        assert assert_rate_headers(r, 10, 60)[0] == 9
        health = await call(http, "GET", f"{srv.base}/health")
        assert health.status == 200 and health.body["rate_limiter"]["ok"] is True, health.body
        assert health.body["status"] == "ok", health.body
        samples = await scrape_metrics(http, srv.base)
        assert samples[("boardcast_rate_limiter_up", ())] == 1
        assert decisions(samples, "reads", "fail_open") == 2
    # one outage (hanging, then gone), logged once
    assert capfd.readouterr().out.count("rate_limiter_unavailable") == 1


async def test_trusted_proxy_clients_get_buckets_of_their_own(
    limited: ServerFactory, http: aiohttp.ClientSession
) -> None:
    writes = Rate(3, 600)
    trusted = load_settings({"BOARDCAST_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}).trusted_proxies
    srv = await limited(rate_writes=writes, trusted_proxies=trusted)

    async def logout(forwarded_for: str | None) -> Reply:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
        return await call(http, "POST", f"{srv.base}{LOGOUT}", headers=headers)

    remaining = [assert_rate_headers(await logout("198.51.100.1"), 3, 600)[0] for _ in range(3)]
    assert remaining == [2, 1, 0]
    assert_refused(await logout("198.51.100.1"), "writes", writes)
    # the client is read from the right: spoofed entries to its left change nothing, and
    # further trusted proxies to its right are skipped
    assert_refused(await logout("203.0.113.9, 198.51.100.1"), "writes", writes)
    assert_refused(await logout("198.51.100.1, 10.1.2.3"), "writes", writes)
    # other clients behind the proxy, and the proxy itself, are not affected
    assert assert_rate_headers(await logout("198.51.100.2"), 3, 600)[0] == 2
    assert assert_rate_headers(await logout("2001:db8::7"), 3, 600)[0] == 2
    assert assert_rate_headers(await logout(None), 3, 600)[0] == 2
    # an IPv6 client is its /64: any address in it shares the bucket, the next /64 does not
    assert assert_rate_headers(await logout("2001:db8::8"), 3, 600)[0] == 1
    assert assert_rate_headers(await logout("2001:db8:0:0:ffff:ffff:ffff:ffff"), 3, 600)[0] == 0
    assert_refused(await logout("2001:db8::1:2:3:4"), "writes", writes)
    assert assert_rate_headers(await logout("2001:db8:0:1::7"), 3, 600)[0] == 2


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8::7", "2001:db8::/64"),
        ("2001:db8:0:0:8000::1", "2001:db8::/64"),
        ("2001:db8:0:1::", "2001:db8:0:1::/64"),
        ("::1", "::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # IPv4 on a dual-stack socket: not all in ::/64
        ("::ffff:198.51.100.8", "198.51.100.8"),
        ("unknown", "unknown"),
    ],
)
def test_address_bucket(address: str, bucket: str) -> None:
    assert address_bucket(address) == bucket


async def test_without_trusted_proxies_x_forwarded_for_does_not_escape_the_limit(
    limited: ServerFactory, http: aiohttp.ClientSession
) -> None:
    writes = Rate(3, 600)
    srv = await limited(rate_writes=writes)  # BOARDCAST_TRUSTED_PROXIES unset: the peer is the client
    replies = [
        await call(http, "POST", f"{srv.base}{LOGOUT}", headers={"X-Forwarded-For": f"198.51.100.{i}"})
        for i in range(1, 6)
    ]
    assert [r.status for r in replies] == [401, 401, 401, 429, 429]
    assert [int(r.headers["RateLimit-Remaining"]) for r in replies[:3]] == [2, 1, 0]
    for r in replies[3:]:
        assert_refused(r, "writes", writes)
