"""The WebSocket endpoint: one task per connection (aiohttp's handler, which reads).

The reader decodes frames and turns them into actor messages without waiting for commits
(commands are pipelined, bounded by ``server.wsboard.MAX_INFLIGHT``). Nothing waits to write: the actor
hands each connection complete frames (a whole commit's events in one frame, built once per
encoding) and the connection writes them straight to its transport. A peer that does not
read lets the transport's buffer grow; past ``outbound_buffer_bytes`` it is closed as a slow
consumer (4000) and resumes from its last seq. The actor never waits on a socket, and an idle
connection owns no task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
import time
import uuid
from typing import Any

import structlog
from aiohttp import WebSocketError, WSMsgType, web

from actors import (
    BoardRegistry,
    Metrics,
)
from protocol.codec import CODECS, SUBPROTOCOLS, Codec
from protocol.commands import Command
from protocol.errors import BoardcastError, CloseCode, ErrorCode
from protocol.messages import (
    Access,
    ErrorMsg,
    Left,
    ServerMessage,
    Welcome,
)
from server.access import Grant, User, command_refusal
from server.config import Settings
from server.live import LiveConnections
from server.ratelimit import LocalBucket
from server.wsboard import BoardRequests
from server.wsguard import StrictWebSocketResponse
from storage import MemberRepo

log = structlog.get_logger(__name__)

_conn_counter = itertools.count(1)
_NODE = os.urandom(5).hex()  # connection ids are unique across the nodes of a cluster


class ConnState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection(BoardRequests):
    """One client socket; also the actor's :class:`Subscriber` for each joined board."""

    # Slots: thousands of idle connections per process, each should cost as little as possible.
    __slots__ = (
        "__weakref__",
        "_close_code",
        "_close_reason",
        "_closer",
        "_expiry",
        "_frames_out",
        "_grace_bytes",
        "_last_seen",
        "_live",
        "_members",
        "_metrics",
        "_ping_task",
        "_registry",
        "_settings",
        "_transport",
        "_user",
        "_ws",
        "codec",
        "conn_id",
        "state",
        "user_id",
        "user_name",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        codec: Codec,
        user: User,
        registry: BoardRegistry,
        members: MemberRepo,
        metrics: Metrics,
        settings: Settings,
        live: LiveConnections,
    ) -> None:
        super().__init__(LocalBucket(settings.rate_ws_commands), LocalBucket(settings.rate_presence))
        self.conn_id = f"{_NODE}-{next(_conn_counter)}"
        self.user_id = user.id
        self.user_name = user.name
        self.codec = codec
        self.state = ConnState.OPEN
        self._ws = ws
        self._transport = transport
        self._closer: asyncio.Task[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._live = live
        self._user = user
        self._registry = registry
        self._members = members
        self._metrics = metrics
        self._settings = settings
        self._last_seen = time.monotonic()
        self._expiry: asyncio.TimerHandle | None = None
        self._close_code: int = 1000
        self._close_reason = ""
        self._grace_bytes = 0  # see send_frame
        self._frames_out = metrics.frames_out.labels(encoding=codec.name)

    @property
    def _log(self) -> Any:
        # Bound on use, not kept: an idle connection should cost as little memory as possible.
        return log.bind(conn_id=self.conn_id, user_id=str(self.user_id))

    # ------------------------------------------------------------------ Subscriber

    def send(self, msg: ServerMessage) -> None:
        self.send_frame(self.codec.frame([self.codec.encode(msg)]))

    def send_frame(self, frame: bytes) -> None:
        if self.state is not ConnState.OPEN:
            return
        transport = self._transport
        if transport.is_closing():
            return
        transport.write(frame)
        self._frames_out.inc()
        # What the peer has not taken yet stays in the transport's buffer (after the kernel's).
        buffered = transport.get_write_buffer_size()
        bound = self._settings.outbound_buffer_bytes
        # One frame larger than the bound (the snapshot of a board of thousands of cards in a
        # `joined`) does not make its peer slow: the bound then counts what queues behind it,
        # until the peer has taken the buffer back under the bound.
        if len(frame) > bound:
            self._grace_bytes = len(frame)
        elif self._grace_bytes and buffered <= bound:
            self._grace_bytes = 0
        if buffered > bound + self._grace_bytes:
            self._metrics.ws_closed.labels(reason="slow_consumer").inc()
            self._log.warning("slow_consumer", buffered_bytes=buffered)
            self._begin_close(CloseCode.SLOW_CONSUMER, "slow consumer; resume from your last seq")

    def board_closed(self, board_id: uuid.UUID, reason: str) -> None:
        if self._boards.pop(board_id, None) is not None:
            self.send(Left(board_id=board_id, reason=reason))

    def refusal(self, board_id: uuid.UUID, cmd: Command, own: bool = True) -> BoardcastError | None:
        grant = self._boards.get(board_id)
        if grant is None:  # access revoked (the connection was told) or left since sending
            return BoardcastError(ErrorCode.NOT_JOINED, "not joined to this board")
        return command_refusal(grant, cmd, own)

    def joining(self, board_id: uuid.UUID) -> bool:
        return board_id in self._boards

    def access_changed(self, board_id: uuid.UUID, grant: object | None) -> bool:
        old = self._boards.get(board_id)
        if old is None:  # left, or gave up joining
            return False
        if not isinstance(grant, Grant):
            del self._boards[board_id]
            self.send(Access(board_id=board_id, role=None))
            self.send(Left(board_id=board_id, reason="access_revoked"))
            self._log.info("board_access_revoked", board_id=str(board_id))
            return False
        self._boards[board_id] = grant
        if grant.role != old.role:
            self.send(Access(board_id=board_id, role=grant.role))
        return True

    # ------------------------------------------------------------------ lifecycle

    def _transition(self, expected: ConnState, new: ConnState) -> None:
        assert self.state is expected, f"connection in {self.state}, expected {expected}"
        self.state = new

    def _begin_close(self, code: int, reason: str) -> None:
        if self.state is not ConnState.OPEN:
            return
        self._transition(ConnState.OPEN, ConnState.CLOSING)
        self._close_code, self._close_reason = code, reason
        self._closer = asyncio.get_running_loop().create_task(self._close_socket())

    async def _close_socket(self) -> None:
        """Send the close frame (bounded), else drop the transport.

        A slow consumer's close frame queues behind the data already buffered; if the peer
        still does not read, the transport is aborted so the reader (and the connection)
        ends."""
        try:
            await asyncio.wait_for(
                self._ws.close(code=self._close_code, message=self._close_reason.encode()), timeout=5
            )
        except (TimeoutError, ConnectionError):
            self._transport.abort()

    async def run(self) -> None:
        self._metrics.connections.inc()
        # Logged without `_log`'s bind: a reconnect storm opens thousands of these at once, and
        # a bound logger is built even when the level filters the line out.
        log.info(
            "ws_connected",
            conn_id=self.conn_id,
            user_id=str(self.user_id),
            encoding=self.codec.name,
            via=self._user.via.value,
        )
        self._live.add(self)
        expires = self._user.expires_at
        if expires is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(loop.time() + max(0.0, expires - time.time()), self._token_expired)
        try:
            self.send(
                Welcome(
                    conn_id=self.conn_id,
                    user_id=self.user_id,
                    heartbeat_s=self._settings.heartbeat_s,
                    max_frame_bytes=self._settings.max_frame_bytes,
                    protocol="boardcast.v1",
                    expires_at_ms=None if expires is None else int(expires * 1000),
                )
            )
            await self._reader()
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            if self.state is ConnState.OPEN:
                self._transition(ConnState.OPEN, ConnState.CLOSING)
            self._live.discard(self)
            for board_id in list(self._boards):
                self._leave_quietly(board_id)
            if self._closer is not None:
                await self._closer
            if not self._ws.closed:
                with contextlib.suppress(ConnectionError):
                    await self._ws.close(code=self._close_code, message=self._close_reason.encode())
            self.state = ConnState.CLOSED
            self._metrics.connections.dec()
            log.info(
                "ws_closed",
                conn_id=self.conn_id,
                user_id=str(self.user_id),
                code=self._close_code,
                peer_code=self._ws.close_code,
                reason=self._close_reason or None,
            )

    def _token_expired(self) -> None:
        """The credentials this connection was opened with are no longer good."""
        if self.state is not ConnState.OPEN:
            return
        self._send_error(
            BoardcastError(ErrorCode.TOKEN_EXPIRED, "token expired; reconnect with a fresh token"), None
        )
        self._metrics.ws_closed.labels(reason="token_expired").inc()
        self._begin_close(CloseCode.TOKEN_EXPIRED, "token expired")

    def credentials_revoked(self) -> None:
        """The session was logged out or revoked, or the API token revoked."""
        if self.state is not ConnState.OPEN:
            return
        self._send_error(
            BoardcastError(
                ErrorCode.UNAUTHORIZED, "credentials revoked; sign in again", {"reason": "revoked"}
            ),
            None,
        )
        self._metrics.ws_closed.labels(reason="credentials_revoked").inc()
        self._begin_close(CloseCode.CREDENTIALS_REVOKED, "credentials revoked")

    @property
    def credentials(self) -> tuple[uuid.UUID | None, uuid.UUID | None]:
        """(session id, API token id) this connection was opened with."""
        return self._user.session_id, self._user.token_id

    def close_going_away(self) -> None:
        """Server shutdown: clients reconnect (elsewhere) and resume."""
        self._begin_close(CloseCode.GOING_AWAY, "server shutting down; resume")

    async def wait_closed(self) -> None:
        if self._closer is not None:
            await self._closer

    def beat(self, now: float) -> None:
        """Called by :class:`LiveConnections`: close if silent too long, else ping."""
        if self.state is not ConnState.OPEN:
            return
        if now - self._last_seen > self._settings.idle_timeout_s:
            self._metrics.ws_closed.labels(reason="idle_timeout").inc()
            self._begin_close(CloseCode.IDLE_TIMEOUT, "idle timeout: no frame or pong")
            return
        if not self._ws.closed:
            # Queued on the transport without waiting: a stuck peer cannot stall the sweep.
            self._ping_task = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        try:
            await self._ws.ping()
        except (ConnectionError, RuntimeError):
            pass

    async def _reader(self) -> None:
        ws = self._ws
        frames_in = self._metrics.frames_in.labels(encoding=self.codec.name)
        if isinstance(ws, StrictWebSocketResponse) and ws.refused_early:
            # An unmasked frame came with the upgrade request: none of its frames is handled.
            self._metrics.ws_closed.labels(reason="protocol_error").inc()
            self._close_code = CloseCode.PROTOCOL_ERROR
            await ws.receive()  # reads the queued error: aiohttp closes with 1002
            return
        async for frame in ws:
            self._last_seen = time.monotonic()
            if frame.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                frames_in.inc()
                try:
                    msg = self.codec.decode(frame.data)
                except BoardcastError as e:
                    self._send_error(e, getattr(e, "rid", None))
                    continue
                await self._dispatch(msg)
            elif frame.type is WSMsgType.PING:
                await ws.pong(frame.data)
            elif frame.type is WSMsgType.ERROR:
                # A WebSocket protocol error found by aiohttp's reader (or server.wsguard):
                # aiohttp has already closed with its code (1002, 1007, 1009).
                exc = frame.data
                if isinstance(exc, WebSocketError):
                    self._close_code = int(exc.code)
                    reason = _PROTOCOL_ERRORS.get(exc.code, "protocol_error")
                    self._metrics.ws_closed.labels(reason=reason).inc()
                self._log.info("ws_error", error=str(exc), code=self._close_code)
                break
            if self.state is not ConnState.OPEN:
                break

    def _send_error(self, e: BoardcastError, rid: str | None, board_id: uuid.UUID | None = None) -> None:
        self.send(ErrorMsg(code=e.code, message=e.message, rid=rid, board_id=board_id, details=e.details))


_PROTOCOL_ERRORS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "protocol_error",
    CloseCode.INVALID_TEXT: "invalid_text",
    CloseCode.MESSAGE_TOO_BIG: "too_big",
}


async def negotiate(request: web.Request, settings: Settings) -> tuple[web.WebSocketResponse, Codec | None]:
    # MessagePack is the default when a client offers both (aiohttp would take the client's order).
    offered = {p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")}
    preferred = [p for p in SUBPROTOCOLS if p in offered]
    ws = StrictWebSocketResponse(
        protocols=preferred[:1] or SUBPROTOCOLS,
        # aiohttp refuses a message of max_msg_size bytes or more; max_frame_bytes is the
        # largest accepted (as `welcome` says).
        max_msg_size=settings.max_frame_bytes + 1,
        autoping=False,  # pongs are read by the connection: they prove it is alive
        heartbeat=None,
        compress=False,
    )
    await ws.prepare(request)
    codec = CODECS.get(ws.ws_protocol or "")
    return ws, codec
