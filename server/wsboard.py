"""What a connection asks of boards: joins, leaves, commands and presence, turned into actor
messages (the board decides; this only translates and keeps the connection's own bookkeeping).

A mixin of :class:`server.ws.Connection`, which owns the socket; kept apart so that one
command's path (frame -> ``_dispatch`` -> ``_command`` -> the board's mailbox -> the ack the
board pushes) reads in one place.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any, cast

from actors import (
    ActorStopped,
    BoardRegistry,
    Execute,
    SetPresenceState,
    Subscribe,
    Subscriber,
    Unsubscribe,
)
from protocol.commands import BoardDeleted as BoardDeletedEvent
from protocol.errors import BoardcastError, ErrorCode
from protocol.messages import (
    ClientMessage,
    Cmd,
    EventMsg,
    Join,
    Leave,
    Left,
    Ping,
    Pong,
    ServerMessage,
    SetPresence,
)
from server.access import Action, BoardDeleted, Grant, User, authorize, client_may_send
from server.config import Settings
from server.ratelimit import LocalBucket
from storage import MemberRepo
from storage.members import DeletedBoard

MAX_BOARDS_PER_CONNECTION = 64
MAX_INFLIGHT = 256  # commands sent to actors and not yet answered, per connection


class BoardRequests:
    """The board-facing half of a connection (see :class:`server.ws.Connection`)."""

    # What this half writes; the connection declares the rest of the slots.
    __slots__ = ("_boards", "_command_bucket", "_inflight", "_inflight_free", "_presence_bucket")

    conn_id: str
    user_id: uuid.UUID
    _registry: BoardRegistry
    _members: MemberRepo
    _user: User
    _settings: Settings
    _log: Any

    def __init__(self, command_bucket: LocalBucket, presence_bucket: LocalBucket) -> None:
        self._boards: dict[uuid.UUID, Grant] = {}  # joined board -> what this user may do there
        self._inflight = 0
        self._inflight_free: asyncio.Event | None = None  # made only when a client hits the bound
        self._command_bucket = command_bucket
        self._presence_bucket = presence_bucket

    def send(self, msg: ServerMessage) -> None:
        raise NotImplementedError

    def _send_error(self, e: BoardcastError, rid: str | None, board_id: uuid.UUID | None = None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, msg: ClientMessage) -> None:
        try:
            match msg:
                case Cmd():
                    self._take_request()
                    await self._command(msg)
                case SetPresence():
                    self._presence(msg)
                case Join():
                    self._take_request()
                    await self._join(msg)
                case Leave():
                    self._take_request()
                    await self._leave(msg)
                case Ping():
                    self.send(Pong(rid=msg.rid))
        except BoardcastError as e:
            self._send_error(e, getattr(msg, "rid", None), getattr(msg, "board_id", None))

    def _take_request(self) -> None:
        """Count a command, join or leave against the connection's limit, before anything
        else is looked at: refused and failing requests cost the server work too (a join costs
        an access check and a snapshot)."""
        wait = self._command_bucket.take(time.monotonic())
        if wait:
            raise _limited("ws_commands", wait)

    async def _command(self, msg: Cmd) -> None:
        # Only whether the board is joined is looked at here. The role is decided by the board
        # when it applies the command (Connection.refusal), after any change ahead of it and
        # after its duplicate check, so a retry of a command applied before a demotion is
        # acknowledged as a duplicate, not refused.
        if msg.board_id not in self._boards:
            raise BoardcastError(ErrorCode.NOT_JOINED, "join the board before sending commands")
        client_may_send(msg.op)
        while self._inflight >= MAX_INFLIGHT:
            # Back-pressure: stop reading this socket until the board answers some commands.
            if self._inflight_free is None:
                self._inflight_free = asyncio.Event()
            self._inflight_free.clear()
            await self._inflight_free.wait()
        fut = self._registry.submit(
            msg.board_id,
            Execute(
                author=self.user_id,
                rid=msg.rid,
                cmd=msg.op,
                origin=cast(Subscriber, self),
                received=time.perf_counter(),
            ),
        )
        self._inflight += 1
        fut.add_done_callback(functools.partial(self._command_done, msg.rid, msg.board_id))

    def _command_done(self, rid: str, board_id: uuid.UUID, fut: asyncio.Future[Any]) -> None:
        # The ack was already pushed by the actor, ahead of the event; failures arrive here.
        self._inflight -= 1
        if self._inflight_free is not None:
            self._inflight_free.set()
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            return
        if not isinstance(exc, BoardcastError):
            self._log.error("command_failed", error=repr(exc))
            exc = BoardcastError(ErrorCode.INTERNAL, "internal error")
        self._send_error(exc, rid, board_id)

    def _presence(self, msg: SetPresence) -> None:
        if msg.board_id not in self._boards:
            raise BoardcastError(ErrorCode.NOT_JOINED, "join the board before setting presence")
        wait = self._presence_bucket.take(time.monotonic())
        if wait:
            raise _limited("presence", wait)
        self._registry.tell(msg.board_id, SetPresenceState(conn_id=self.conn_id, state=msg.state))

    async def _join(self, msg: Join) -> None:
        if msg.board_id not in self._boards and len(self._boards) >= MAX_BOARDS_PER_CONNECTION:
            raise BoardcastError(
                ErrorCode.TOO_LARGE, f"a connection may join at most {MAX_BOARDS_PER_CONNECTION} boards"
            )
        board_id = msg.board_id
        try:
            # Decided here first, so that no actor is started for a board the caller cannot
            # see, and again by the actor as it subscribes (see actors.Subscribe): a removal
            # that commits between this answer and the subscription would otherwise leave a
            # stale grant.
            self._boards[board_id] = await authorize(self._members, self._user, board_id, Action.READ)
        except BoardDeleted as e:
            self._told_deleted(msg, e.tomb)
            return
        try:
            # The actor pushes the `joined` frame itself, ahead of any later event.
            await self._registry.ask(
                board_id,
                Subscribe(sub=cast(Subscriber, self), rid=msg.rid, since_seq=msg.since_seq),
                self._settings.ask_timeout_s,
            )
        except BoardcastError as e:
            # Not joined, whatever the actor did: a Subscribe still queued (a timeout) or an
            # earlier subscription of this connection (a failed re-join) is undone in order.
            self._leave_quietly(board_id)
            if e.code is ErrorCode.NOT_FOUND:  # deleted while the join was on its way?
                tomb = await self._members.deleted(board_id, self.user_id)
                if tomb is not None:
                    self._told_deleted(msg, tomb)
                    return
            raise

    def _told_deleted(self, msg: Join, tomb: DeletedBoard) -> None:
        """A former member joins a deleted board: a resume gets the `board.deleted` event it
        missed, and every such join the `left` a viewer gets when its board is deleted."""
        self._boards.pop(msg.board_id, None)
        if msg.since_seq is not None and msg.since_seq < tomb.seq:
            self.send(
                EventMsg(
                    board_id=msg.board_id,
                    seq=tomb.seq,
                    author=tomb.deleted_by,
                    ts_ms=tomb.ts_ms,
                    event=BoardDeletedEvent(),
                )
            )
        self.send(Left(board_id=msg.board_id, reason="board_deleted", rid=msg.rid))

    async def _leave(self, msg: Leave) -> None:
        if self._boards.pop(msg.board_id, None) is None:
            raise BoardcastError(ErrorCode.NOT_JOINED, "not joined to this board")
        try:
            await self._registry.ask(
                msg.board_id, Unsubscribe(conn_id=self.conn_id), self._settings.ask_timeout_s
            )
        except ActorStopped:
            pass
        self.send(Left(board_id=msg.board_id, reason="left", rid=msg.rid))

    def _leave_quietly(self, board_id: uuid.UUID) -> None:
        self._boards.pop(board_id, None)
        try:
            self._registry.tell(board_id, Unsubscribe(conn_id=self.conn_id))
        except ActorStopped:
            pass


def _limited(tier: str, wait: float) -> BoardcastError:
    return BoardcastError(
        ErrorCode.RATE_LIMITED,
        f"too many {tier.replace('_', ' ')}; retry shortly",
        {"tier": tier, "retry_after_s": round(wait, 3)},
    )
