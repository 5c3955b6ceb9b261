"""The board directory: one way into every board, wherever its actor runs.

``ask`` / ``tell`` / ``submit`` take a board id and a message. On the board's owner (the node
holding its lease) they go to the local actor's mailbox; elsewhere the cluster
(:mod:`actors.cluster`) forwards them over the command bus and relays the answer. A board
nobody owns is activated where it is first needed: this node claims the lease, and the actor
takes a new epoch in PostgreSQL as it loads (placement policy: first use wins; a board moves
when its owner passivates it, hands it off on SIGTERM, or dies and its lease expires).

Messages to one board from one caller keep their order: while the board's place is being
found they wait in one queue, and once it is known they go to one mailbox or one bus link.

Without a cluster (a registry built for one process, in tests of the actor itself) every
board is activated locally with no lease, as before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from actors.board import BoardActor
from actors.lease import KeptLease, Lease
from actors.metrics import Metrics
from actors.runtime import Actor, ActorStopped
from protocol.errors import BoardcastError, ErrorCode

if TYPE_CHECKING:
    from actors.cluster import Cluster

log = structlog.get_logger(__name__)

MAX_ROUTES = 8  # how often one message is routed again after "not the owner" answers

_Waiting = tuple[Any, "asyncio.Future[Any] | None", int]


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    def done(f: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if f.cancelled():
            target.cancel()
        elif (e := f.exception()) is not None:
            target.set_exception(e)
        else:
            target.set_result(f.result())

    source.add_done_callback(done)


class BoardRegistry:
    def __init__(
        self,
        factory: Callable[[uuid.UUID], BoardActor],
        metrics: Metrics,
        cluster: Cluster | None = None,
    ) -> None:
        self._factory = factory
        self._metrics = metrics
        self._cluster = cluster
        self._actors: dict[uuid.UUID, BoardActor] = {}
        self._leases: dict[uuid.UUID, tuple[Lease, KeptLease]] = {}
        self._releases: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._waiting: dict[uuid.UUID, list[_Waiting]] = {}
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        if cluster is not None:
            cluster.attach(self)

    def __len__(self) -> int:
        return len(self._actors)

    @property
    def cluster(self) -> Cluster | None:
        return self._cluster

    def local(self, board_id: uuid.UUID) -> BoardActor | None:
        """The board's actor if it runs here and takes messages."""
        actor = self._actors.get(board_id)
        return actor if actor is not None and actor.accepting else None

    def has_unleased(self) -> bool:
        return len(self._leases) < len(self._actors)

    def owned(self) -> list[uuid.UUID]:
        return list(self._leases)

    def get(self, board_id: uuid.UUID) -> BoardActor:
        """The board's local actor; without a cluster it is activated if needed."""
        actor = self.local(board_id)
        if actor is not None:
            return actor
        if self._closing or self._cluster is not None:
            raise ActorStopped(f"board:{board_id}")
        return self._start(board_id, None)

    # ------------------------------------------------------------------ the one way in

    def tell(self, board_id: uuid.UUID, msg: Any) -> None:
        self.dispatch(board_id, msg, None)

    def submit(self, board_id: uuid.UUID, msg: Any) -> asyncio.Future[Any]:
        actor = self.local(board_id)
        if actor is not None:  # the hot path: this node owns the board
            return actor.submit(msg)
        # The loop is kept: on CPython 3.11 get_running_loop() makes a getpid() call, and this
        # runs once per command forwarded to another node (6.7 % of a forwarding node's CPU).
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.dispatch(board_id, msg, fut)
        return fut

    async def ask(self, board_id: uuid.UUID, msg: Any, timeout_s: float) -> Any:
        fut = self.submit(board_id, msg)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            fut.cancel()
            raise BoardcastError(
                ErrorCode.TIMEOUT, f"board:{board_id} did not answer within {timeout_s}s"
            ) from None

    def tell_if_active(self, board_id: uuid.UUID, msg: Any) -> None:
        """Tell the board only if it is active somewhere (a board nobody has open has no
        viewers to tell): here, or on the node holding its lease."""
        actor = self.local(board_id)
        if actor is not None:
            actor.tell(msg)
        elif self._cluster is not None and not self._closing:
            self._cluster.tell_owner(board_id, msg)

    def dispatch(
        self, board_id: uuid.UUID, msg: Any, fut: asyncio.Future[Any] | None, routed: int = 0
    ) -> None:
        """Deliver ``msg`` wherever the board lives; ``fut`` (if any) gets the answer."""
        if fut is not None and fut.done():
            return  # given up (a timeout) before it could be sent again
        actor = self.local(board_id)
        if actor is None and self._cluster is None and not self._closing:
            actor = self._start(board_id, None)
        if actor is not None:
            try:
                if fut is None:
                    actor.tell(msg)
                else:
                    _chain(actor.submit(msg), fut)
                return
            except ActorStopped:
                pass  # raced its passivation: placed again below
        if self._closing or routed > MAX_ROUTES or self._cluster is None:
            if fut is not None and not fut.done():
                fut.set_exception(ActorStopped(f"board:{board_id}"))
            return
        owner = self._cluster.owner_of(board_id)
        if owner is not None:
            self._cluster.forward(owner, board_id, msg, fut, routed)
            return
        waiting = self._waiting.get(board_id)
        if waiting is not None:
            waiting.append((msg, fut, routed))
            return
        self._waiting[board_id] = [(msg, fut, routed)]
        asyncio.get_running_loop().create_task(self._place(board_id), name=f"place:{board_id}")

    async def _place(self, board_id: uuid.UUID) -> None:
        assert self._cluster is not None
        try:
            release = self._releases.get(board_id)
            if release is not None:  # our own earlier activation's lease is being given up
                await asyncio.shield(release)
            placed: Lease | str | None = await self._cluster.place(board_id)
        except BoardcastError as e:
            self._fail_waiting(board_id, e)
            return
        except Exception as e:
            if not self._cluster.bus.serves:
                self._fail_waiting(
                    board_id,
                    BoardcastError(ErrorCode.UNAVAILABLE, "the board cannot be reached now (Redis?); retry"),
                )
                return
            # Redis is unreachable: the board runs here without a lease, fenced by its epoch
            # in PostgreSQL alone (no other activation can commit once this one has loaded,
            # and this one cannot once another has). When Redis answers again it claims the
            # lease, or stops if another node holds it (see adopt_unleased).
            log.warning("board_activated_unleased", board_id=str(board_id), error=repr(e))
            self._metrics.lease_events.labels(event="unleased").inc()
            placed = None
        waiting = self._waiting.pop(board_id, [])
        local = not isinstance(placed, str)
        if self._closing:
            if isinstance(placed, Lease):
                self._release_later(board_id, placed)
        elif local and self.local(board_id) is None:
            self._start(board_id, placed if isinstance(placed, Lease) else None)
        for msg, fut, routed in waiting:
            if isinstance(placed, str) and not self._closing:
                # All of them to the node just found, in their order. Dispatching each anew
                # would look the place up again: a process that is not a server forgets a
                # relay as soon as it forwards to it, so every message after the first was
                # placed again (and routed once more), until a burst of commands from one
                # client ran past MAX_ROUTES and failed with ActorStopped.
                if fut is None or not fut.done():
                    self._cluster.forward(placed, board_id, msg, fut, routed + 1)
            else:
                self.dispatch(board_id, msg, fut, routed + (0 if local else 1))

    def _fail_waiting(self, board_id: uuid.UUID, err: BoardcastError) -> None:
        for _msg, fut, _ in self._waiting.pop(board_id, []):
            if fut is not None and not fut.done():
                fut.set_exception(err)

    async def adopt_unleased(self) -> None:
        """Boards activated while Redis was unreachable claim their lease now, or stop (their
        viewers join again and reach the node that holds it)."""
        assert self._cluster is not None
        for board_id, actor in list(self._actors.items()):
            if board_id in self._leases or not actor.accepting:
                continue
            lease = await self._cluster.leases.claim(board_id)
            if self._actors.get(board_id) is not actor or not actor.accepting:
                if lease is not None:
                    self._release_later(board_id, lease)
                continue
            if lease is None:
                log.warning("board_unleased_owned_elsewhere", board_id=str(board_id))
                actor.lease_lost()
                continue
            self._keep(actor, lease)
            log.info("board_lease_adopted", board_id=str(board_id))

    # ------------------------------------------------------------------ local actors

    def _start(self, board_id: uuid.UUID, lease: Lease | None) -> BoardActor:
        actor = self._factory(board_id)
        actor.on_stopped(self._forget)
        self._actors[board_id] = actor
        self._metrics.active_actors.set(len(self._actors))
        if lease is not None:
            self._keep(actor, lease)
        actor.start()
        return actor

    def _keep(self, actor: BoardActor, lease: Lease) -> None:
        assert self._cluster is not None
        keeper = self._cluster.leases.keep(
            lease,
            on_lost=lambda _lease: self._lease_lost(actor),
            on_renewed=lambda _lease: self._metrics.lease_events.labels(event="renewed").inc(),
        )
        self._leases[actor.board_id] = (lease, keeper)
        self._metrics.owned_boards.set(len(self._leases))

    def _lease_lost(self, actor: BoardActor) -> None:
        self._metrics.lease_events.labels(event="lost").inc()
        log.warning("board_lease_lost", board_id=str(actor.board_id))
        actor.lease_lost()

    def _forget(self, actor: Actor) -> None:
        assert isinstance(actor, BoardActor)
        board_id = actor.board_id
        if self._actors.get(board_id) is actor:
            del self._actors[board_id]
        self._metrics.active_actors.set(len(self._actors))
        held = self._leases.pop(board_id, None)
        if held is not None:
            lease, keeper = held
            keeper.cancel()
            self._release_later(board_id, lease)
        self._metrics.owned_boards.set(len(self._leases))

    def _release_later(self, board_id: uuid.UUID, lease: Lease) -> None:
        assert self._cluster is not None
        cluster = self._cluster

        async def release() -> None:
            try:
                if await cluster.leases.release(lease):
                    self._metrics.lease_events.labels(event="released").inc()
            except Exception as e:  # it expires on its own
                log.warning("lease_release_failed", board_id=str(board_id), error=repr(e))
            finally:
                if self._releases.get(board_id) is task:
                    del self._releases[board_id]

        task = asyncio.get_running_loop().create_task(release(), name=f"release:{board_id}")
        self._releases[board_id] = task

    def mailbox_depths(self) -> list[int]:
        return [a.mailbox_depth() for a in self._actors.values()]

    async def close(self) -> None:
        """Hand every board off: stop taking messages, commit what is in flight, then give
        the leases up so that other nodes take the boards over at once."""
        self._closing = True
        actors = list(self._actors.values())
        await asyncio.gather(*(a.stop() for a in actors), return_exceptions=True)
        releases = list(self._releases.values())
        if releases:
            await asyncio.gather(*releases, return_exceptions=True)
