"""The owning side of the cluster (see :mod:`actors.cluster`): requests from other nodes for
boards whose actor runs here, their viewers as :class:`actors.remote.RemoteViewer`, and the
answers sent back. A request for a board not active here is answered ``not_owner``: nothing
was done, and the sender places the board again."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from actors.bus import Bus
from actors.messages import (
    AccessChanged,
    CommandResult,
    DeleteBoard,
    Execute,
    GetSnapshot,
    GetSnapshotJson,
    SetPresenceState,
    Subscribe,
    Unsubscribe,
)
from actors.metrics import Metrics
from actors.remote import RemoteViewer, ViewerPolicy
from actors.runtime import ActorStopped
from protocol import bus as b
from protocol.codec import CODECS, MSGPACK
from protocol.errors import BoardcastError, ErrorCode

if TYPE_CHECKING:
    from actors.registry import BoardRegistry

log = structlog.get_logger(__name__)

_ENC = msgspec.msgpack.Encoder()
_CODECS_BY_NAME = {c.name: c for c in CODECS.values()}


class OwnerSide:
    """Mixed into :class:`actors.cluster.Cluster`, which holds the state named here."""

    bus: Bus
    _policy: ViewerPolicy
    _metrics: Metrics
    # node -> (conn id, board) -> viewer
    _remote: dict[str, dict[tuple[str, uuid.UUID], RemoteViewer]]

    @property
    def registry(self) -> BoardRegistry:
        raise NotImplementedError

    def _on_request(self, src: str, req: b.Request) -> None:
        actor = self.registry.local(req.board_id)
        if actor is None and not req.route:
            if req.id:
                self.bus.send(src, b.Reply(id=req.id, not_owner=True))
            return
        msg = self._message(src, req.board_id, req.body)
        if msg is None:
            if req.id:
                err = b.ErrorInfo(code=ErrorCode.NOT_JOINED, message="join the board again")
                self.bus.send(src, b.Reply(id=req.id, error=err))
            return
        if req.id == 0:
            if actor is not None:
                actor.tell(msg)
            else:
                self.registry.tell(req.board_id, msg)
            return
        fut = actor.submit(msg) if actor is not None else self.registry.submit(req.board_id, msg)
        fut.add_done_callback(lambda f: self._reply(src, req, f))

    def _message(self, src: str, board_id: uuid.UUID, body: b.Body) -> Any:
        match body:
            case b.ExecuteBody():
                origin = None
                if body.conn_id is not None:
                    origin = self._remote.get(src, {}).get((body.conn_id, board_id))
                    if origin is None or not origin.viewing:
                        return None
                return Execute(author=body.author, rid=body.rid, cmd=body.cmd, origin=origin)
            case b.SubscribeBody():
                viewers = self._remote.setdefault(src, {})
                if (body.conn_id, board_id) not in viewers:
                    self._metrics.remote_viewers.inc()
                codec = _CODECS_BY_NAME.get(body.codec, MSGPACK)
                # a new one for each join: a re-join starts from "joining" again
                viewer = viewers[(body.conn_id, board_id)] = RemoteViewer(
                    src,
                    board_id,
                    body.conn_id,
                    body.user_id,
                    body.user_name,
                    codec,
                    self.bus,
                    self._policy,
                    body.sub,
                )
                return Subscribe(sub=viewer, rid=body.rid, since_seq=body.since_seq)
            case b.UnsubscribeBody():
                leaving = self._remote.get(src, {}).get((body.conn_id, board_id))
                if leaving is not None:
                    leaving.leave()
                return Unsubscribe(conn_id=body.conn_id)
            case b.PresenceBody():
                return SetPresenceState(conn_id=body.conn_id, state=body.state)
            case b.AccessBody():
                return AccessChanged(user_id=body.user_id)
            case b.SnapshotBody():
                return GetSnapshotJson() if body.json else GetSnapshot()
            case b.DeleteBody():
                return DeleteBoard(author=body.author)
        return None

    def _reply(self, src: str, req: b.Request, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self.bus.send(src, b.Reply(id=req.id, not_owner=True))
            return
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, ActorStopped):  # stopped before it took the message
                self.bus.send(src, b.Reply(id=req.id, not_owner=True))
                return
            if not isinstance(exc, BoardcastError):
                exc = BoardcastError(ErrorCode.INTERNAL, "internal error")
            info = b.ErrorInfo(code=exc.code, message=exc.message, details=exc.details)
            self.bus.send(src, b.Reply(id=req.id, error=info))
            return
        value = fut.result()
        if isinstance(value, CommandResult) and isinstance(req.body, b.ExecuteBody) and req.body.conn_id:
            # A viewer's command: its ack went to the viewer in the frames already; the sender
            # needs to know only that it succeeded (no event to encode here and decode there).
            value = b.ExecuteResult(seq=value.seq, duplicate=value.duplicate)
        elif isinstance(value, CommandResult):
            entity = value.entity
            kind = None if entity is None else type(entity).__name__
            value = b.ExecuteResult(
                seq=value.seq,
                duplicate=value.duplicate,
                event=value.event,
                entity_kind=kind,
                entity=msgspec.Raw(_ENC.encode(entity)),
            )
        self.bus.send(src, b.Reply(id=req.id, value=msgspec.Raw(_ENC.encode(value))))

    def _drop_node(self, node: str) -> None:
        """A node died: its viewers leave the boards they viewed here."""
        viewers = self._remote.pop(node, {})
        log.warning("viewer_node_gone", node=node, viewers=len(viewers))
        for viewer in viewers.values():
            self._metrics.remote_viewers.dec()
            if viewer.viewing:
                # Told, not only dropped: a node taken for dead may be alive after all (paused,
                # or its heartbeat lost with a Redis restart). Its viewers would otherwise stay
                # joined to a board that sends them nothing more: a silent gap. If it is
                # really dead, this waits in its inbox until that expires.
                viewer.board_closed(viewer.board_id, "board_unavailable")
                actor = self.registry.local(viewer.board_id)
                if actor is not None:
                    actor.tell(Unsubscribe(conn_id=viewer.conn_id))
