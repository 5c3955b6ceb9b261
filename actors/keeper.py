"""What keeps a node alive in Redis, from a thread of its own: its board leases and its
heartbeat.

Both must be renewed on time however busy the node is. On the event loop they were not: a
node saturated by writers (its loop half a second late, replies read late) lost leases it
held and stopped boards that were doing fine, and the others would have taken it for dead.
Here one thread renews every lease and the heartbeat in one pipelined round trip per interval,
on a synchronous Redis client of its own, whatever the loop is doing, and posts what it found
(a lease renewed, a lease lost) back to the loop.

A thread could keep a node "alive" whose loop is stuck for good; so it renews only while the
loop shows life: a timer on the loop notes the time every ``tick_s``, and once the loop has
not ticked for ``stall_s`` the thread stops renewing (the leases expire, the heartbeat goes,
other nodes take the boards over) and says so in the log.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Held:
    key: str
    value: str
    valid_until: float  # monotonic: the lease may have gone to another node after this
    renewed: Callable[[float], None]  # (the send time of the renewal that worked), on the loop
    lost: Callable[[], None]  # on the loop


class Keeper:
    def __init__(
        self,
        client: Any,  # a synchronous redis.Redis or redis.cluster.RedisCluster
        renew_script: str,
        lease_ttl_s: float,
        interval_s: float,
        *,
        stall_s: float | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self._client = client
        self._script = renew_script
        self._ttl_ms = max(1, round(lease_ttl_s * 1000))
        self._valid_s = lease_ttl_s * 0.9  # as BoardLeases counts it: a margin for clock rates
        self._interval_s = interval_s
        self._stall_s = stall_s if stall_s is not None else lease_ttl_s * 0.75
        self._tick_s = tick_s
        self._held: dict[uuid.UUID, _Held] = {}
        self._beat: tuple[str, int, str | None, str] | None = None  # key, ttl ms, nodes set, member
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.stalled = False
        self.last_error: str | None = None

    # ------------------------------------------------------------------ the loop's side

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ticker()
        self._thread = threading.Thread(target=self._run, name="boardcast-keeper", daemon=True)
        self._thread.start()

    def _ticker(self) -> None:
        self._tick = time.monotonic()
        assert self._loop is not None
        self._timer = self._loop.call_later(self._tick_s, self._ticker)

    async def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        try:
            self._client.close()
        except Exception as e:
            log.warning("keeper_close_failed", error=repr(e))

    def hold(
        self,
        board_id: uuid.UUID,
        key: str,
        value: str,
        valid_until: float,
        renewed: Callable[[float], None],
        lost: Callable[[], None],
    ) -> None:
        with self._lock:
            self._held[board_id] = _Held(key, value, valid_until, renewed, lost)

    def let_go(self, board_id: uuid.UUID) -> None:
        with self._lock:
            self._held.pop(board_id, None)

    def heartbeat(self, key: str, ttl_ms: int, nodes_key: str | None, member: str) -> None:
        with self._lock:
            self._beat = (key, ttl_ms, nodes_key, member)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if time.monotonic() - self._tick > self._stall_s:
                if not self.stalled:
                    log.error("event_loop_stalled", since_s=round(time.monotonic() - self._tick, 3))
                self.stalled = True
                self._expire(time.monotonic())
                continue
            if self.stalled:
                log.info("event_loop_recovered")
                self.stalled = False
            self._renew()

    def _renew(self) -> None:
        with self._lock:
            held = list(self._held.items())
            beat = self._beat
        sent = time.monotonic()
        try:
            pipe = self._client.pipeline(transaction=False)
            if beat is not None:
                key, ttl_ms, nodes_key, member = beat
                pipe.set(key, str(time.time()), px=ttl_ms)
                if nodes_key is not None:
                    pipe.zadd(nodes_key, {member: time.time()})
            for _board, h in held:
                # EVAL as a raw command: redis-py's ClusterPipeline blocks its eval() method
                # (a TypeError on every round: each lease lost after its TTL on a Redis
                # Cluster), while the raw command is routed to its key's node like any other.
                pipe.execute_command("EVAL", self._script, 1, h.key, h.value, str(self._ttl_ms))
            replies = pipe.execute()
        except Exception as e:  # Redis unreachable, a cluster reshuffle...: retried next time
            if self.last_error is None:
                log.warning("keeper_renew_failed", leases=len(held), error=repr(e))
            self.last_error = repr(e)
            self._expire(time.monotonic())
            return
        if self.last_error is not None:
            log.info("keeper_renew_recovered")
            self.last_error = None
        took = time.monotonic() - sent
        if took > self._interval_s:
            log.warning("keeper_renew_slow", leases=len(held), took_s=round(took, 3))
        results = replies[len(replies) - len(held) :]
        for (board_id, h), ok in zip(held, results, strict=True):
            if ok:
                h.valid_until = sent + self._valid_s
                self._post(h.renewed, sent)
            else:
                self._lose(board_id, h)

    def _expire(self, now: float) -> None:
        """Leases whose deadline passed without a renewal are lost."""
        with self._lock:
            late = [(b, h) for b, h in self._held.items() if now >= h.valid_until]
        for board_id, h in late:
            self._lose(board_id, h)

    def _lose(self, board_id: uuid.UUID, h: _Held) -> None:
        with self._lock:
            if self._held.get(board_id) is not h:
                return  # let go meanwhile
            del self._held[board_id]
        self._post(h.lost)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the process is stopping
            pass
