"""Board leases in Redis: which node owns (runs the actor of) a board, at most one at a time.

A node claims a board's lease before it activates the board and renews it while the board is
active; the lease expires on its own when the node dies, is paused or is cut from Redis, so
another node can take the board over. Claim, renewal and release are Lua scripts, each one
atomic step: a renewal is a compare-and-extend (the lease is extended only if it still holds
this node's value), a release deletes only a lease that is still ours, never a blind SET/DEL.

Every claim takes a new lease epoch from a per-board counter in Redis, kept without a TTL so
that epochs never go back while the counter lives. The epoch orders the claims of a board
(a lease value names the node *and* the epoch, so even a late renewal of an earlier claim of
the same node cannot extend a newer one). It is not what fences commits: that is the board's
epoch in PostgreSQL (``BoardRepo.claim_epoch``), which the activation takes after winning the
lease, so that a lost Redis (a failover that forgot the counter) can never let two
activations commit. The registry claims a lease before it activates a board (actors/registry.py);
on a server node the keeper thread (actors/keeper.py) renews them.

Keys carry a hash tag per board (``{prefix}:{b:<board id>}:<name>``), so that all keys of one
board share a Redis Cluster slot: a script may touch several of them on a cluster, and the
command bus of a board (its streams) can live next to its lease.

Timing. The lease TTL bounds failover: a dead owner's boards can be taken over after at most
``ttl_s`` (plus the claimer's retry delay). The renew interval bounds how many renewals may
fail (a slow Redis, a network blip) before the owner gives the lease up: with the defaults
(TTL 2 s, renewal every 0.5 s) three renewals in a row may be lost. A shorter TTL means faster
failover but more renewal traffic (one script run per board per interval) and more false
losses under a paused process (a long GC or a stopped VM); a longer one the reverse. The owner
counts its lease as lost once ``ttl_s`` minus a margin has passed since it *sent* its last
successful claim or renewal, measured on its own monotonic clock, so it stops before Redis can
give the lease to anybody else (as long as the two clocks run at about the same rate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from actors.keeper import Keeper

log = structlog.get_logger(__name__)

RedisClient = Redis | RedisCluster
# What a Redis call raises when Redis (or a cluster: no node reachable) cannot answer.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)

DEFAULT_TTL_S = 2.0
DEFAULT_RENEW_S = 0.5
# Of the TTL, what the owner keeps as a safety margin against clock rate differences and the
# time a renewal's reply takes to come back.
_MARGIN = 0.1


def new_node_id() -> str:
    """An id for this process, unique across machines and restarts (host, pid, random), so
    that a restarted node never mistakes the leases of its former self for its own."""
    host = socket.gethostname().replace(":", "-") or "node"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


NODE_ID = new_node_id()  # this process's node id


def board_tag(board_id: uuid.UUID) -> str:
    """The Redis Cluster hash tag of a board: every key of one board hashes to its slot."""
    return f"{{b:{board_id}}}"


def board_key(prefix: str, board_id: uuid.UUID, name: str) -> str:
    """The one place board key names are built: ``{prefix}:{b:<board id>}:<name>``."""
    return f"{prefix}:{board_tag(board_id)}:{name}"


# KEYS[1] lease, KEYS[2] epoch counter; ARGV[1] node id, ARGV[2] ttl in ms.
# Free: a new epoch and the lease is ours. Ours already (a claim whose reply was lost, tried
# again): extended and returned as it is. Someone else's: refused, naming the holder.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
    local sep = string.find(cur, ':', 1, true)
    if string.sub(cur, sep + 1) == ARGV[1] then
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return {1, cur}
    end
    return {0, cur}
end
local epoch = redis.call('INCR', KEYS[2])
local value = epoch .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""

# KEYS[1] lease; ARGV[1] the value we hold, ARGV[2] ttl in ms. Compare-and-extend.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RENEW_SCRIPT = _RENEW  # for the keeper thread (actors/keeper.py)

# KEYS[1] lease; ARGV[1] the value we hold. Compare-and-delete.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Script:
    """A Lua script run by its SHA, loaded again by EVAL (which also caches it) when Redis
    forgot it (a restart, SCRIPT FLUSH, a new cluster node). On a cluster, EVALSHA goes to the
    node of its keys' slot, which is why all keys of one script share a board's hash tag."""

    def __init__(self, redis: RedisClient, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        # (redis-py types its commands as sync-or-async: hence the ignores.)
        try:
            return await self._redis.evalsha(self._sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            return await self._redis.eval(self._source, len(keys), *keys, *args)  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this node holds (or held): valid until ``deadline`` on the monotonic clock,
    unless renewed."""

    board_id: uuid.UUID
    node_id: str
    epoch: int
    deadline: float

    @property
    def value(self) -> str:
        return f"{self.epoch}:{self.node_id}"

    def valid(self) -> bool:
        return time.monotonic() < self.deadline


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a board's lease, as Redis says."""

    node_id: str
    epoch: int


def _parse(value: Any) -> Holder:
    text = value.decode() if isinstance(value, bytes) else str(value)
    epoch, node_id = text.split(":", 1)
    return Holder(node_id=node_id, epoch=int(epoch))


class BoardLeases:
    """Claim, renew and release board leases for one node, over a ``redis.asyncio.Redis`` or
    a ``redis.asyncio.cluster.RedisCluster``."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        node_id: str = NODE_ID,
        ttl_s: float = DEFAULT_TTL_S,
        renew_s: float = DEFAULT_RENEW_S,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis prefix must not contain '{' or '}' (it would break the hash tags)")
        if ":" in node_id:
            raise ValueError("a node id must not contain ':'")
        if not 0 < renew_s < ttl_s:
            raise ValueError(f"the lease renew interval ({renew_s}s) must be shorter than its TTL ({ttl_s}s)")
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._claim = _Script(redis, _CLAIM)
        self._renew = _Script(redis, _RENEW)
        self._release = _Script(redis, _RELEASE)
        self._kept: dict[uuid.UUID, KeptLease] = {}
        # The thread that renews kept leases (a server node sets it; see keep)
        self.keeper: Keeper | None = None

    def lease_key(self, board_id: uuid.UUID) -> str:
        return board_key(self._prefix, board_id, "lease")

    def epoch_key(self, board_id: uuid.UUID) -> str:
        return board_key(self._prefix, board_id, "epoch")

    def _deadline(self, sent: float) -> float:
        return sent + self.ttl_s * (1 - _MARGIN)

    async def claim(self, board_id: uuid.UUID) -> Lease | None:
        """The board's lease for this node, or None if another node holds it."""
        sent = time.monotonic()
        ok, value = await self._claim(
            keys=[self.lease_key(board_id), self.epoch_key(board_id)], args=[self.node_id, str(self._ttl_ms)]
        )
        if not ok:
            return None
        holder = _parse(value)
        return Lease(board_id, self.node_id, holder.epoch, self._deadline(sent))

    async def renew(self, lease: Lease) -> Lease | None:
        """The lease extended by a TTL, or None if it is no longer ours (it expired, perhaps
        taken by another node): then the board must be deactivated."""
        sent = time.monotonic()
        extended = await self._renew(
            keys=[self.lease_key(lease.board_id)], args=[lease.value, str(self._ttl_ms)]
        )
        if not extended:
            return None
        return Lease(lease.board_id, lease.node_id, lease.epoch, self._deadline(sent))

    async def release(self, lease: Lease) -> bool:
        """Give the lease up (a board handed off or passivated) if it is still ours; a lease
        that expired and was taken by another node is left alone. Whether it was ours."""
        return bool(await self._release(keys=[self.lease_key(lease.board_id)], args=[lease.value]))

    async def holder(self, board_id: uuid.UUID) -> Holder | None:
        """Who holds the lease now (for routing a command to the owner, and for tests)."""
        value = await self._redis.get(self.lease_key(board_id))
        return None if value is None else _parse(value)

    def keep(
        self,
        lease: Lease,
        on_lost: Callable[[Lease], None],
        on_renewed: Callable[[Lease], None] | None = None,
    ) -> KeptLease:
        """Renew the lease every ``renew_s`` until it is let go (the board stops) or lost,
        then call ``on_lost`` once: refused by Redis (it is someone else's now) or not renewed
        before its deadline (Redis unreachable, or too slow). A failing renewal is retried at
        the next interval while the lease is still valid.

        The renewals are the keeper thread's (``self.keeper``, actors/keeper.py): all of a
        node's leases in one pipelined round trip per interval, off the event loop. Renewed
        on the loop, in one task per lease or one for all, leases were lost on a healthy node
        under write load (the loop half a second late)."""
        if self.keeper is None:
            raise RuntimeError("BoardLeases.keep needs a keeper thread (actors/keeper.py)")
        kept = KeptLease(lease, on_lost, on_renewed, asyncio.get_running_loop().create_future(), keeper=self)
        previous = self._kept.get(lease.board_id)
        if previous is not None:
            self._let_go(previous, lost=False)
        self._kept[lease.board_id] = kept
        self._keep_in_thread(self.keeper, kept)
        return kept

    def _keep_in_thread(self, keeper: Keeper, kept: KeptLease) -> None:
        board_id = kept.lease.board_id

        def renewed(sent: float) -> None:
            if self._kept.get(board_id) is kept and not kept.ended.done():
                kept.current = Lease(board_id, self.node_id, kept.lease.epoch, self._deadline(sent))
                if kept.on_renewed is not None:
                    kept.on_renewed(kept.current)

        def lost() -> None:
            if self._kept.get(board_id) is kept:
                log.warning("lease_lost", board_id=str(board_id), epoch=kept.lease.epoch)
                self._let_go(kept, lost=True)

        keeper.hold(board_id, self.lease_key(board_id), kept.lease.value, kept.lease.deadline, renewed, lost)

    def _let_go(self, kept: KeptLease, lost: bool) -> None:
        if self.keeper is not None:
            self.keeper.let_go(kept.lease.board_id)
        if self._kept.get(kept.current.board_id) is kept:
            del self._kept[kept.current.board_id]
        if not kept.ended.done():
            kept.ended.set_result(None)
            if lost:
                kept.on_lost(kept.lease)


@dataclass(slots=True, eq=False)
class KeptLease:
    """A lease being kept: ``cancel()`` lets it go (without calling ``on_lost``); awaiting it
    waits until it was let go or lost."""

    lease: Lease
    on_lost: Callable[[Lease], None]
    on_renewed: Callable[[Lease], None] | None
    ended: asyncio.Future[None]
    current: Lease = dataclasses.field(init=False)
    keeper: BoardLeases | None = None

    def __post_init__(self) -> None:
        self.current = self.lease

    def cancel(self) -> None:
        if self.keeper is not None:
            self.keeper._let_go(self, lost=False)

    def __await__(self) -> Generator[Any, None, None]:
        return self.ended.__await__()
