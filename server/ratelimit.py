"""Rate limits (docs/ACCESS.md, "Rate limiting"): a GCRA token bucket shared by every node
through Redis, the same bucket in process for per-connection tiers, and who the client is.

GCRA keeps one number per bucket, the theoretical arrival time (TAT): when the bucket would
be full again if nothing else arrived. A request costs one emission interval
(``period / count``) and is allowed while the TAT it would leave stays within one period of
now. That gives bursts of ``count`` refilled at ``count / period`` per second, with a single
read and write per decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from server.config import IPNetwork, Rate

__all__ = ["Decision", "LocalBucket", "RateLimiter", "RateLimiterUnavailable", "address_bucket", "client_ip"]

# KEYS[1] the bucket; ARGV[1] the emission interval and ARGV[2] the burst (count), in integer
# microseconds so that a TAT (about 1.7e15 µs since the epoch) stays an exact integer in Lua's
# doubles. Numbers handed to redis.call keep full precision (tostring would not, so it is never
# used). Time is Redis' own TIME: every node agrees, whatever their clocks say.
# Returns {allowed, remaining, reset_us, retry_after_us}.
_GCRA = """
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, 0, tat - now, new_tat - tolerance - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((tolerance - (new_tat - now)) / interval), new_tat - now, 0}
"""

# Caller keys that can go into a Redis key as they are; anything else (long, spaces, control
# or non-ASCII characters, '#') is hashed, and the '#' of the hashed form keeps the two apart.
_PLAIN_KEY = re.compile(r"[!-\"$-~]{1,100}")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # rate.count
    remaining: int  # requests still allowed right now after this one (>= 0)
    reset_s: float  # seconds until the full count is available again
    retry_after_s: float  # 0.0 when allowed; else seconds until one request would be allowed


class RateLimiterUnavailable(Exception):
    """Redis did not answer a rate limit decision (an error, or not within the timeout)."""


_SHA = hashlib.sha1(_GCRA.encode()).hexdigest().encode()
_EVALSHA_HEAD = b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n" + _SHA + b"\r\n$1\r\n1\r\n"


def _bulk(value: bytes) -> bytes:
    """One argument of a command in the Redis protocol."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


# a command packed as Redis protocol, and the future of the caller waiting for its reply
_Pending = tuple[bytes, "asyncio.Future[list[int]]"]


class RateLimiter:
    """Decides requests against buckets in Redis, one atomic script run per decision.

    Every check answers within ``timeout_s`` of being asked, or raises
    :class:`RateLimiterUnavailable`.

    This runs on every REST request, so it skips most of redis-py's per-command machinery
    (measured: a ``Script`` call costs about 115 µs of CPU, idle or busy; a check here about
    65 µs alone and 13-20 µs with 10-50 in flight): the limiter borrows one connection from the
    client's pool for good, packs EVALSHA itself, and sends the checks that arrive while a
    round trip is under way together as one pipeline (each still its own script run, so each
    stays atomic). The borrowed connection is closed with the pool, when the Redis client is
    closed.
    """

    def __init__(
        self, redis: aioredis.Redis, prefix: str, timeout_s: float = 0.25, cluster: RedisCluster | None = None
    ) -> None:
        self._redis = redis
        # On a Redis Cluster each bucket's script runs on its key's node through the cluster
        # client (one key per script: every bucket is a slot of its own), without the packed
        # pipeline of one connection.
        self._cluster = cluster
        self._prefix = f"{prefix}:rl:"
        self._timeout_s = timeout_s
        self._queue: list[_Pending] = []
        self._deadline = 0.0  # loop time by which the oldest check in the queue must be answered
        self._sender: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None

    def redis_key(self, tier: str, key: str) -> str:
        """Where the bucket of ``key`` in ``tier`` lives."""
        if _PLAIN_KEY.fullmatch(key) is None or "#" in key:
            key = "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self._prefix}{tier}:{key}"

    async def check(self, tier: str, key: str, rate: Rate) -> Decision:
        """Take one request from the bucket ``key`` of ``tier``; a refused request takes nothing."""
        loop = asyncio.get_running_loop()
        interval_us = max(1, round(rate.period_s * 1_000_000 / rate.count))
        if self._cluster is not None:
            return await self._check_on_cluster(self._cluster, self.redis_key(tier, key), interval_us, rate)
        command = b"".join(
            (
                _EVALSHA_HEAD,
                _bulk(self.redis_key(tier, key).encode()),
                _bulk(b"%d" % interval_us),
                _bulk(b"%d" % rate.count),
            )
        )
        future: asyncio.Future[list[int]] = loop.create_future()
        if not self._queue:
            self._deadline = loop.time() + self._timeout_s
        self._queue.append((command, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        allowed, remaining, reset_us, retry_us = await future
        return Decision(
            allowed=allowed == 1,
            limit=rate.count,
            remaining=remaining,
            reset_s=reset_us / 1e6,
            retry_after_s=retry_us / 1e6,
        )

    async def _check_on_cluster(
        self, cluster: RedisCluster, key: str, interval_us: int, rate: Rate
    ) -> Decision:
        args = (key, str(interval_us), str(rate.count))
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    reply = await cluster.evalsha(_SHA.decode(), 1, *args)  # type: ignore[misc]
                except NoScriptError:
                    reply = await cluster.eval(_GCRA, 1, *args)  # type: ignore[misc]
        except (TimeoutError, RedisError, RedisClusterException, OSError) as e:
            raise RateLimiterUnavailable(f"Redis did not answer: {e!r}") from None
        allowed, remaining, reset_us, retry_us = (int(x) for x in reply)
        return Decision(
            allowed=allowed == 1,
            limit=rate.count,
            remaining=remaining,
            reset_s=reset_us / 1e6,
            retry_after_s=retry_us / 1e6,
        )

    async def _send(self) -> None:
        # Runs while checks are queued. It starts on the loop iteration after the first check,
        # so the checks of every request handled in between go out with it; the checks that
        # arrive during a round trip make up the next batch.
        batch: list[_Pending] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._answer(batch)
        finally:
            self._sender = None
            # only when cancelled (the loop is closing): leave nobody waiting
            stopped = RateLimiterUnavailable("rate limiter stopped")
            self._fail(batch + self._queue, stopped)
            self._queue = []

    async def _answer(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout_at(self._deadline):
                replies = await self._round_trip(batch)
        except Exception as e:  # RedisError, OSError, TimeoutError; and never leave callers hanging
            if self._conn is not None:  # in an unknown state: a reply may be half read
                await self._conn.disconnect(nowait=True)
            self._fail(batch, RateLimiterUnavailable(f"Redis did not answer: {e!r}"))
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(RateLimiterUnavailable(f"rate limit script failed: {reply}"))
            else:
                future.set_result(reply)

    @staticmethod
    def _fail(batch: list[_Pending], error: RateLimiterUnavailable) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    async def _round_trip(self, batch: list[_Pending]) -> list[Any]:
        reused = self._conn is not None and self._conn.is_connected
        if self._conn is None:
            self._conn = await self._redis.connection_pool.get_connection()
        commands = [command for command, _ in batch]
        try:
            replies = await self._pipeline(self._conn, commands)
        except RedisConnectionError:
            if not reused:
                raise
            # Closed while it sat idle (Redis restarted, a proxy's idle timeout): once more on a
            # new connection. Should Redis have run the checks before the connection broke,
            # they count twice, erring on the strict side.
            await self._conn.disconnect(nowait=True)
            replies = await self._pipeline(self._conn, commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Redis restarted or its scripts were flushed; a NOSCRIPT run did nothing, so
            # running those checks again counts nothing twice
            await self._conn.send_command("SCRIPT", "LOAD", _GCRA, check_health=False)
            await self._conn.read_response()
            again = await self._pipeline(self._conn, [batch[i][0] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    @staticmethod
    async def _pipeline(conn: AbstractConnection, commands: list[bytes]) -> list[Any]:
        await conn.send_packed_command(commands, check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as e:  # one script run failed; its reply was read in full
                replies.append(e)
        return replies


class LocalBucket:
    """The same GCRA bucket in process memory, for tiers counted per connection.

    Time is kept in units of one emission interval, so each request adds exactly 1.0 to the
    TAT and a burst of ``count`` compares exactly however ``period / count`` rounds.
    """

    __slots__ = ("_count", "_per_s", "_tat")

    def __init__(self, rate: Rate) -> None:
        self._count = rate.count
        self._per_s = rate.count / rate.period_s
        self._tat = -math.inf

    def take(self, now: float) -> float:
        """Take one request at ``now`` (monotonic seconds): 0.0 if allowed, else seconds until
        one would be allowed (nothing taken)."""
        units = now * self._per_s
        new_tat = max(self._tat, units) + 1.0
        if new_tat - units > self._count:
            return (new_tat - self._count - units) / self._per_s
        self._tat = new_tat
        return 0.0


def _normalize(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return ip


def address_bucket(address: str) -> str:
    """The client address as a rate limit key. An IPv6 client is its /64: one subscriber or
    host is handed a whole /64 and can pick any address in it, so a per-address limit would not
    hold anybody back. IPv4 peers of a dual-stack socket count as their IPv4 address."""
    ip = _normalize(address)
    if ip is None:  # "unknown" (no peer address), or a UNIX socket peer
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def is_trusted_proxy(peer: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    """Whether the TCP peer (``request.remote``) is one of the trusted proxies, whose
    ``X-Forwarded-*`` headers are believed."""
    hop = _normalize(peer) if peer is not None else None
    return hop is not None and any(hop in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The client address of a request whose TCP peer is ``peer`` (``request.remote``).

    Only when the peer is a trusted proxy is ``X-Forwarded-For`` read, from the right (the
    entry the nearest proxy appended) leftwards, past further trusted proxies, to the first
    address that is not one: entries left of it are whatever the client chose to send. A
    malformed entry ends the walk at the last trusted hop, which is then the answer.
    """
    if peer is None:
        return "unknown"
    if not trusted:
        return peer
    hop = _normalize(peer)
    if hop is None or not any(hop in net for net in trusted):
        return peer
    if forwarded_for:
        for entry in reversed(forwarded_for.split(",")):
            address = _normalize(entry)
            if address is None:
                break
            hop = address
            if not any(address in net for net in trusted):
                break
    return str(hop)
