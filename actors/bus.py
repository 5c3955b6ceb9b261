"""The command bus's transport: one inbox stream per process in Redis, read with one blocking
read, written in order by one writer per destination.

Keys (``{prefix}:{n:<node id>}:<name>``, a hash tag per node, so every key of one node shares a
Redis Cluster slot and every command here touches a single slot):

- ``in``: the node's inbox, a stream of :class:`protocol.bus.Parcel` entries. Trimmed to about
  ``max_inbox`` entries, and given a TTL refreshed by every write, so a dead node's inbox
  disappears on its own.
- ``alive``: the node's heartbeat, a key with a TTL of ``heartbeat_ttl_s`` renewed every
  ``heartbeat_s``. A node whose key is gone is dead: its viewers leave every board's presence
  and the boards it owned are handed on.
- ``{prefix}:nodes`` (its own tag): a sorted set of live nodes by last heartbeat, for processes
  that are not servers to find one.

Order: everything one process sends another goes through one queue and one writer task, so
the receiver sees it in the order it was sent. Parcels are numbered per link; a receiver that
finds a number missing (its inbox was trimmed under it, or the sender dropped a parcel it
could not write) calls ``on_gap`` so that what depended on it is resynchronised. A sender
never waits for Redis: a destination whose queue outgrows ``max_queue`` is dropped (counted),
which the receiver sees as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from actors.keeper import Keeper
from actors.lease import REDIS_ERRORS, RedisClient
from actors.metrics import Metrics
from protocol.bus import Frames, Item, Parcel
from protocol.model import dec_hook

log = structlog.get_logger(__name__)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Parcel, dec_hook=dec_hook)

Handler = Callable[[str, Item], None]


def node_key(prefix: str, node_id: str, name: str) -> str:
    return f"{prefix}:{{n:{node_id}}}:{name}"


class _Link:
    """What this process has queued for one destination."""

    __slots__ = ("dropped", "gap", "items", "n", "pending", "task", "wake")

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self.n = 0  # the number of the last parcel written
        self.dropped = 0  # how often the queue was dropped
        self.gap = False  # the next parcel skips a number: items were dropped
        # The parcel being written: (its number, how many queued items it holds, the drop
        # count when it was made, its bytes). A failed write is retried with these very
        # bytes, never re-made from the queue: the failed write may have landed, and a
        # receiver drops a second parcel of the same number as a copy.
        self.pending: tuple[int, int, int, bytes] | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Bus:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        node_id: str,
        metrics: Metrics,
        *,
        heartbeat_s: float = 0.5,
        heartbeat_ttl_s: float = 2.0,
        max_inbox: int = 20_000,
        max_queue: int = 50_000,
        serves: bool = True,
    ) -> None:
        self.node_id = node_id
        self.heartbeat_s = heartbeat_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.serves = serves  # a server node (listed for others to route through), or a client
        self.connected = False  # whether the last Redis call worked (for /health)
        self.last_error: str | None = None
        self.lag_s = 0.0
        self._redis = redis
        self._prefix = prefix
        self._metrics = metrics
        self._max_inbox = max_inbox
        self._max_queue = max_queue
        self._inbox_ttl_ms = 60_000
        self._links: dict[str, _Link] = {}
        self._seen: dict[str, int] = {}  # the last parcel number per sender
        self._handler: Handler | None = None
        self._on_gap: Callable[[str], None] | None = None
        self._on_beat: Callable[[], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # A keeper thread writes the heartbeat when given (see actors/keeper.py)
        self.keeper: Keeper | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, handler: Handler, on_gap: Callable[[str], None], on_beat: Callable[[], None]) -> None:
        self._handler, self._on_gap, self._on_beat = handler, on_gap, on_beat
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(), name="bus-reader"),
            loop.create_task(self._beat(), name="bus-heartbeat"),
        ]

    async def close(self) -> None:
        """Send what is queued (briefly), stop reading and say goodbye (the heartbeat key is
        removed, so others see this node gone at once rather than after its TTL)."""
        self._closing = True
        writers = [lk.task for lk in self._links.values() if lk.task is not None and not lk.task.done()]
        for link in self._links.values():
            link.wake.set()
        # The writers finish what is queued and stop; never cut off in the middle of a write
        # (a parcel written but not yet taken off the queue would be sent twice).
        if writers:
            await asyncio.wait(writers, timeout=2.0)
        tasks = [*self._tasks, *writers]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a reader inside redis-py's read (with socket timeouts set) was seen not
            # to take its cancellation at once, and an unbounded wait hung BoardClient's exit;
            # the loops also stop on their own at their next turn once closing.
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            if pending:
                log.warning("bus_tasks_still_running", tasks=[t.get_name() for t in pending])
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.delete(self._key(self.node_id, "alive"))
            await self._redis.zrem(self._nodes_key, self.node_id)
            await self._redis.delete(self._key(self.node_id, "in"))

    # ------------------------------------------------------------------ sending

    def send(self, dest: str, item: Item) -> None:
        """Queue ``item`` for ``dest``; returns at once. Items to one destination arrive in
        the order they were sent."""
        link = self._links.get(dest)
        if link is None:
            link = self._links[dest] = _Link()
        if len(link.items) >= self._max_queue:
            # The destination (or Redis) cannot keep up: drop what waits rather than grow
            # without bound; the gap in the numbering tells the receiver to resynchronise.
            self._metrics.bus_dropped.inc(len(link.items))
            log.warning("bus_queue_dropped", dest=dest, items=len(link.items))
            link.items.clear()
            link.gap = True
            link.dropped += 1
        link.items.append(item)
        if link.task is None or link.task.done():
            link.task = asyncio.get_running_loop().create_task(self._write(dest, link), name=f"bus-to-{dest}")
        else:
            link.wake.set()

    def send_frame(self, dest: str, board_id: uuid.UUID, frame: bytes, sub: int) -> None:
        """A frame for one subscription on ``dest``; the same frame for several of them (one
        broadcast) travels once."""
        link = self._links.get(dest)
        if link is not None and link.items:
            last = link.items[-1]
            if isinstance(last, Frames) and last.frame is frame:
                last.subs.append(sub)
                return
        self.send(dest, Frames(board_id=board_id, frame=frame, subs=[sub]))

    async def _write(self, dest: str, link: _Link) -> None:
        while True:
            if not link.items and link.pending is None:
                if self._closing:
                    return
                link.wake.clear()
                try:
                    async with asyncio.timeout(30.0):
                        await link.wake.wait()
                except TimeoutError:
                    if not link.items and link.pending is None:
                        return  # the link (and its numbering) stays; a new send starts a writer
                continue
            while True:
                try:
                    await self._flush(dest, link)
                    self._ok()
                    break
                except REDIS_ERRORS as e:
                    self._failed("bus_write_failed", e)
                    if self._closing:
                        return
                    await asyncio.sleep(0.2)

    async def _flush(self, dest: str, link: _Link) -> None:
        """Write everything queued for ``dest`` as one parcel (kept queued if Redis fails)."""
        if link.pending is None:
            items = list(link.items)
            n = link.n + (2 if link.gap else 1)
            link.gap = False
            data = _ENCODER.encode(Parcel(src=self.node_id, n=n, items=items))
            link.pending = (n, len(items), link.dropped, data)
        n, count, dropped, data = link.pending
        key = self._key(dest, "in")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"m": data}, maxlen=self._max_inbox, approximate=True)
            pipe.pexpire(key, self._inbox_ttl_ms)
            await pipe.execute()
        link.pending = None
        link.n = n
        if link.dropped == dropped:
            for _ in range(count):  # what was queued meanwhile stays for the next parcel
                link.items.popleft()
        self._metrics.bus_sent.inc(count)

    # ------------------------------------------------------------------ receiving

    async def _read(self) -> None:
        key = self._key(self.node_id, "in")
        last = "0-0"
        while not self._closing:
            try:
                got = await self._redis.xread({key: last}, count=256, block=1000)
                self._ok()
            except REDIS_ERRORS as e:
                self._failed("bus_read_failed", e)
                await asyncio.sleep(0.2)
                continue
            for _stream, entries in got or ():
                for entry_id, fields in entries:
                    last = entry_id
                    self._receive(fields.get(b"m") or fields.get("m"))
                if entries:
                    # How long the newest parcel waited in the inbox (its id is Redis's clock
                    # in ms when it was added): the node's stream lag.
                    newest = entries[-1][0]
                    ms = int((newest.decode() if isinstance(newest, bytes) else newest).split("-", 1)[0])
                    self.lag_s = max(0.0, time.time() - ms / 1000)
                    self._metrics.bus_lag.set(self.lag_s)

    def _receive(self, data: Any) -> None:
        try:
            parcel = _DECODER.decode(data)
        except (msgspec.DecodeError, TypeError) as e:
            log.error("bus_bad_parcel", error=str(e))
            return
        seen = self._seen.get(parcel.src, 0)
        if parcel.n <= seen:
            # A copy of a parcel already handled: the sender's write landed but its reply was
            # lost (a timeout, a dropped connection), so it wrote the parcel again with the
            # same number. Handling it again would apply its requests twice (a forwarded
            # command without a request id) and show its frames twice.
            log.warning("bus_duplicate_parcel", src=parcel.src, n=parcel.n, seen=seen)
            return
        self._seen[parcel.src] = parcel.n
        if parcel.n != seen + 1:
            self._metrics.bus_gaps.inc()
            log.warning("bus_gap", src=parcel.src, expected=seen + 1, got=parcel.n)
            assert self._on_gap is not None
            self._on_gap(parcel.src)
        self._metrics.bus_received.inc(len(parcel.items))
        assert self._handler is not None
        for item in parcel.items:
            try:
                self._handler(parcel.src, item)
            except Exception:
                log.exception("bus_item_failed", src=parcel.src, item=type(item).__name__)

    # ------------------------------------------------------------------ liveness

    async def _beat(self) -> None:
        alive = self._key(self.node_id, "alive")
        ttl_ms = max(1, round(self.heartbeat_ttl_s * 1000))
        if self.keeper is not None:
            self.keeper.heartbeat(alive, ttl_ms, self._nodes_key if self.serves else None, self.node_id)
            # The keeper's first round is an interval away, and a node answers requests before
            # that: one beat now, or a viewer joining at once is taken for dead by the owner
            # of its board (its presence dropped, the viewer told to join again).
            await self._write_beat(alive, ttl_ms)
        while True:
            if self.keeper is None:
                await self._write_beat(alive, ttl_ms)
            self._beat_callback()
            await asyncio.sleep(self.heartbeat_s)

    async def _write_beat(self, alive: str, ttl_ms: int) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(alive, str(time.time()), px=ttl_ms)
                if self.serves:
                    pipe.zadd(self._nodes_key, {self.node_id: time.time()})
                await pipe.execute()
            self._ok()
        except REDIS_ERRORS as e:
            self._failed("bus_heartbeat_failed", e)

    def _beat_callback(self) -> None:
        assert self._on_beat is not None
        try:
            self._on_beat()
        except Exception:
            log.exception("bus_beat_failed")

    async def alive(self, node_ids: list[str]) -> dict[str, bool]:
        """Which of these nodes still beat (one single-key read each, pipelined)."""
        if not node_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for n in node_ids:
                pipe.exists(self._key(n, "alive"))
            found = await pipe.execute()
        return {n: bool(f) for n, f in zip(node_ids, found, strict=True)}

    async def live_servers(self) -> list[str]:
        """Server nodes that beat recently (for a process that is not a server)."""
        since = time.time() - self.heartbeat_ttl_s
        found = await self._redis.zrangebyscore(self._nodes_key, since, "+inf")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in found]

    # ------------------------------------------------------------------ helpers

    @property
    def _nodes_key(self) -> str:
        return f"{self._prefix}:{{nodes}}"

    def _key(self, node_id: str, name: str) -> str:
        return node_key(self._prefix, node_id, name)

    def _ok(self) -> None:
        if not self.connected:
            self.connected = True
            self._metrics.redis_up.set(1)
            if self.last_error is not None:
                log.info("bus_redis_recovered")
            self.last_error = None

    def _failed(self, event: str, e: BaseException) -> None:
        if self.connected or self.last_error is None:
            log.warning(event, error=repr(e))
        self.connected = False
        self.last_error = repr(e)
        self._metrics.redis_up.set(0)
