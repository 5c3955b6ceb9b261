"""This node's side of the cluster: placing boards, forwarding to owners, serving as one.

Two roles meet here, both driven by the items of the bus (:mod:`actors.bus`):

- **Forwarding** (this node has a caller of a board owned elsewhere): each message becomes a
  :class:`protocol.bus.Request` to the owner; its :class:`Reply` resolves the caller's future.
  A local connection viewing such a board is known here by its conn id, and what the owner
  sends it (frames, controls) is handed to it. When the owner dies (its heartbeat is gone) or
  a parcel from it is missing, its viewers here are told `board_unavailable` and join again,
  which reaches the board's next owner; requests still unanswered are sent again where that is
  safe (a command with a request id is de-duplicated by the board) and otherwise answered
  "outcome unknown".
- **Owning** (a board's actor runs here; :mod:`actors.owner`): requests from other nodes go
  to the local actor, with their viewers as :class:`actors.remote.RemoteViewer`; a request for
  a board not active here is answered ``not_owner`` (nothing was done) and the sender places
  the board again. Viewers of a node that died leave the board's presence.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from actors.bus import Bus
from actors.lease import BoardLeases, Lease
from actors.messages import (
    AccessChanged,
    CommandResult,
    DeleteBoard,
    Execute,
    GetSnapshot,
    GetSnapshotJson,
    SetPresenceState,
    Subscribe,
    Subscriber,
    Unsubscribe,
)
from actors.metrics import Metrics
from actors.owner import OwnerSide
from actors.remote import RemoteViewer, ViewerPolicy
from protocol import bus as b
from protocol import model
from protocol.errors import BoardcastError, ErrorCode
from protocol.model import BoardSnapshot, dec_hook

if TYPE_CHECKING:
    from actors.registry import BoardRegistry

log = structlog.get_logger(__name__)

_RESULT = msgspec.msgpack.Decoder(b.ExecuteResult, dec_hook=dec_hook)
_SNAPSHOT = msgspec.msgpack.Decoder(BoardSnapshot, dec_hook=dec_hook)
_INT = msgspec.msgpack.Decoder(int)
_BYTES = msgspec.msgpack.Decoder(bytes)
_ENTITIES: dict[str, msgspec.msgpack.Decoder[Any]] = {}


def _entity_decoder(kind: str) -> msgspec.msgpack.Decoder[Any]:
    """The decoder of a REST reply's entity, by the name of its protocol.model Struct."""
    decoder = _ENTITIES.get(kind)
    if decoder is None:
        struct = getattr(model, kind, None)
        if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
            raise ValueError(f"unknown entity kind {kind!r}")
        decoder = _ENTITIES[kind] = msgspec.msgpack.Decoder(struct, dec_hook=dec_hook)
    return decoder


def _unknown_outcome() -> BoardcastError:
    return BoardcastError(
        ErrorCode.UNAVAILABLE,
        "the board's node went away; the outcome is unknown: retry with the same request id",
    )


@dataclass(slots=True)
class _Sent:
    board_id: uuid.UUID
    msg: Any
    fut: asyncio.Future[Any]
    dest: str
    routed: int
    sent: float
    kind: str


class Cluster(OwnerSide):
    def __init__(
        self,
        bus: Bus,
        leases: BoardLeases,
        policy: ViewerPolicy,
        metrics: Metrics,
        *,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.bus = bus
        self.leases = leases
        self.node_id = bus.node_id
        self._policy = policy
        self._metrics = metrics
        self._timeout_s = request_timeout_s
        self._registry: BoardRegistry | None = None
        self._ids = itertools.count(1)
        # forwarding side
        self._owners: dict[uuid.UUID, str] = {}
        self._orphans: set[uuid.UUID] = set()  # boards whose owner was seen to die
        self._sent: dict[int, _Sent] = {}
        # Local connections viewing boards owned elsewhere: owner -> board -> conn id ->
        # subscription id; and each live subscription id's (connection, board, owner). What an
        # owner sends is addressed to subscription ids: one retired (left, resynced, joined
        # again) drops whatever still arrives for it.
        self._proxied: dict[str, dict[uuid.UUID, dict[str, int]]] = {}
        self._by_sub: dict[int, tuple[Subscriber, uuid.UUID, str]] = {}
        self._sub_ids = itertools.count(1)
        # owning side
        # node -> (conn id, board) -> viewer
        self._remote: dict[str, dict[tuple[str, uuid.UUID], RemoteViewer]] = {}
        self._checking = False
        self._adopting = False

    def attach(self, registry: BoardRegistry) -> None:
        self._registry = registry

    def start(self) -> None:
        if self.bus.keeper is not None:
            self.bus.keeper.start()
        self.bus.start(self._on_item, self._on_gap, self._on_beat)

    async def close(self) -> None:
        if self.bus.keeper is not None:
            await self.bus.keeper.stop()  # before the heartbeat key goes
        await self.bus.close()

    @property
    def registry(self) -> BoardRegistry:
        assert self._registry is not None
        return self._registry

    # ------------------------------------------------------------------ placement

    def owner_of(self, board_id: uuid.UUID) -> str | None:
        return self._owners.get(board_id)

    async def place(self, board_id: uuid.UUID) -> Lease | str:
        """Claim the board here, or name the live node that holds it. A holder that stopped
        beating keeps its lease until it expires; then this node claims it (a failover)."""
        deadline = time.monotonic() + self.leases.ttl_s + 1.0
        saw_dead = False
        while True:
            if self.bus.serves:
                lease = await self.leases.claim(board_id)
                if lease is not None:
                    self._metrics.lease_events.labels(event="claimed").inc()
                    if board_id in self._orphans:
                        self._orphans.discard(board_id)
                        saw_dead = True
                    if saw_dead:
                        self._metrics.failovers.inc()
                        log.info("board_failover", board_id=str(board_id), epoch=lease.epoch)
                    return lease
                self._metrics.lease_events.labels(event="refused").inc()
            holder = await self.leases.holder(board_id)
            if holder is not None and holder.node_id != self.node_id:
                if (await self.bus.alive([holder.node_id]))[holder.node_id]:
                    self._owners[board_id] = holder.node_id
                    return holder.node_id
                saw_dead = True
            elif holder is None and not self.bus.serves:
                servers = await self.bus.live_servers()
                if servers:  # one of them routes it on (route=True), activating it if need be
                    relay = self._owners[board_id] = servers[hash(board_id) % len(servers)]
                    return relay
            if time.monotonic() > deadline:
                raise BoardcastError(ErrorCode.UNAVAILABLE, "no node could take the board; retry")
            await asyncio.sleep(0.05)

    def forget_owner(self, board_id: uuid.UUID) -> None:
        self._owners.pop(board_id, None)

    # ------------------------------------------------------------------ forwarding

    def forward(
        self, dest: str, board_id: uuid.UUID, msg: Any, fut: asyncio.Future[Any] | None, routed: int
    ) -> None:
        body, kind = self._body(dest, board_id, msg)
        rid = 0
        if fut is not None:
            rid = next(self._ids)
            self._sent[rid] = _Sent(board_id, msg, fut, dest, routed, time.perf_counter(), kind)
            fut.add_done_callback(functools.partial(self._forget_sent, rid))
        route = not self.bus.serves
        if route:
            self._owners.pop(board_id, None)  # a relay, not the owner: ask again next time
        self.bus.send(dest, b.Request(id=rid, board_id=board_id, body=body, route=route))

    def _forget_sent(self, rid: int, _fut: asyncio.Future[Any]) -> None:
        self._sent.pop(rid, None)

    def _body(self, dest: str, board_id: uuid.UUID, msg: Any) -> tuple[b.Body, str]:
        match msg:
            case Execute():
                conn = msg.origin.conn_id if msg.origin is not None else None
                return b.ExecuteBody(author=msg.author, rid=msg.rid, cmd=msg.cmd, conn_id=conn), "execute"
            case Subscribe():
                sub = msg.sub
                self._unproxy(board_id, sub.conn_id)  # a join again: a new subscription
                sid = next(self._sub_ids)
                self._proxied.setdefault(dest, {}).setdefault(board_id, {})[sub.conn_id] = sid
                self._by_sub[sid] = (sub, board_id, dest)
                body = b.SubscribeBody(
                    conn_id=sub.conn_id,
                    user_id=sub.user_id,
                    user_name=sub.user_name,
                    codec=sub.codec.name,
                    rid=msg.rid,
                    since_seq=msg.since_seq,
                    sub=sid,
                )
                return body, "subscribe"
            case Unsubscribe():
                self._unproxy(board_id, msg.conn_id)
                return b.UnsubscribeBody(conn_id=msg.conn_id), "unsubscribe"
            case SetPresenceState():
                return b.PresenceBody(conn_id=msg.conn_id, state=msg.state), "presence"
            case AccessChanged():
                return b.AccessBody(user_id=msg.user_id), "access"
            case GetSnapshot():
                return b.SnapshotBody(), "snapshot"
            case GetSnapshotJson():
                return b.SnapshotBody(json=True), "snapshot_json"
            case DeleteBoard():
                return b.DeleteBody(author=msg.author), "delete"
        raise BoardcastError(ErrorCode.INTERNAL, f"cannot forward {type(msg).__name__}")

    def _unproxy(self, board_id: uuid.UUID, conn_id: str) -> None:
        for boards in self._proxied.values():
            conns = boards.get(board_id)
            if conns is not None and conn_id in conns:
                self._by_sub.pop(conns.pop(conn_id), None)
                if not conns:
                    del boards[board_id]

    def tell_owner(self, board_id: uuid.UUID, msg: Any) -> None:
        """Tell the board's owner, if any node holds it (an access change)."""

        async def lookup() -> None:
            try:
                holder = await self.leases.holder(board_id)
            except Exception as e:
                log.warning("owner_lookup_failed", board_id=str(board_id), error=repr(e))
                return
            if holder is None:
                return
            if holder.node_id == self.node_id:
                actor = self.registry.local(board_id)
                if actor is not None:
                    actor.tell(msg)
                return
            self.forward(holder.node_id, board_id, msg, None, 0)

        asyncio.get_running_loop().create_task(lookup(), name=f"tell-owner:{board_id}")

    def _on_reply(self, src: str, rep: b.Reply) -> None:
        sent = self._sent.pop(rep.id, None)
        if sent is None or sent.fut.done():
            return
        self._metrics.forward_latency.labels(kind=sent.kind).observe(time.perf_counter() - sent.sent)
        if rep.not_owner:
            self.forget_owner(sent.board_id)
            if isinstance(sent.msg, Subscribe):
                self._unproxy(sent.board_id, sent.msg.sub.conn_id)
            # The owner is giving the board up (or just did): try again after a moment, by
            # when its lease is released or another node holds it.
            delay = 0.02 * (sent.routed + 1)
            asyncio.get_running_loop().call_later(
                delay, self.registry.dispatch, sent.board_id, sent.msg, sent.fut, sent.routed + 1
            )
            return
        if rep.error is not None:
            if isinstance(sent.msg, Subscribe):
                self._unproxy(sent.board_id, sent.msg.sub.conn_id)
            sent.fut.set_exception(
                BoardcastError(ErrorCode(rep.error.code), rep.error.message, rep.error.details)
            )
            return
        try:
            sent.fut.set_result(self._decode_value(sent, rep.value))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            log.error("bus_bad_reply", kind=sent.kind, error=str(e))
            sent.fut.set_exception(BoardcastError(ErrorCode.INTERNAL, "a bad answer from the board's node"))

    def _decode_value(self, sent: _Sent, value: msgspec.Raw) -> Any:
        data = bytes(value)
        if sent.kind == "execute":
            r = _RESULT.decode(data)
            entity = None
            if r.entity_kind is not None:
                entity = _entity_decoder(r.entity_kind).decode(bytes(r.entity))
            return CommandResult(seq=r.seq, duplicate=r.duplicate, event=r.event, entity=entity)
        if sent.kind == "subscribe":
            return _INT.decode(data)
        if sent.kind == "snapshot":
            return _SNAPSHOT.decode(data)
        if sent.kind == "snapshot_json":
            return _BYTES.decode(data)
        return None

    def _on_frames(self, src: str, item: b.Frames) -> None:
        # Only to viewers who view that board through that node: a frame from a node that
        # lost the board (it was paused, then resumed) must not reach a viewer who joined it
        # elsewhere since.
        for sid in item.subs:
            found = self._by_sub.get(sid)
            if found is not None and found[2] == src:
                found[0].send_frame(item.frame)

    def _on_control(self, src: str, item: b.Control) -> None:
        found = self._by_sub.get(item.sub)
        if found is None or (found[0].conn_id, found[1], found[2]) != (item.conn_id, item.board_id, src):
            return  # about a subscription that was since retired
        sub = found[0]
        if item.op == "closed":
            self._unproxy(item.board_id, item.conn_id)
            sub.board_closed(item.board_id, item.reason)
        elif item.op == "access":
            grant = self._policy.decode_grant(bytes(item.grant))
            if not sub.access_changed(item.board_id, grant):
                self._unproxy(item.board_id, item.conn_id)

    def _resync_owner(self, owner: str, reason: str) -> None:
        """The owner died or we missed part of what it sent: its viewers here join again."""
        boards = self._proxied.pop(owner, {})
        for board_id, conns in boards.items():
            self.forget_owner(board_id)
            for sid in conns.values():
                found = self._by_sub.pop(sid, None)
                if found is not None:
                    self._metrics.resyncs.labels(reason=reason).inc()
                    found[0].board_closed(board_id, "board_unavailable")
        for board_id in [bid for bid, o in self._owners.items() if o == owner]:
            del self._owners[board_id]

    def _owner_gone(self, owner: str) -> None:
        log.warning("board_owner_gone", node=owner)
        # Whoever claims these next takes them over from a dead node: a failover.
        if len(self._orphans) > 10_000:
            self._orphans.clear()
        self._orphans.update(self._proxied.get(owner, {}))
        self._orphans.update(bid for bid, o in self._owners.items() if o == owner)
        self._resync_owner(owner, "owner_gone")
        for rid, sent in list(self._sent.items()):
            if sent.dest != owner:
                continue
            del self._sent[rid]
            if isinstance(sent.msg, Execute) and (sent.msg.rid is None or sent.msg.origin is not None):
                # Not safe to apply twice without a request id; and a viewer's command could
                # only be refused by the next owner (the viewer was just told to join again):
                # its sender retries it with the same request id once joined.
                sent.fut.set_exception(_unknown_outcome())
            else:  # a REST or job command de-duplicated by its request id, or a read
                self.registry.dispatch(sent.board_id, sent.msg, sent.fut, sent.routed + 1)

    # ------------------------------------------------------------------ bus callbacks

    def _on_item(self, src: str, item: b.Item) -> None:
        match item:
            case b.Frames():
                self._on_frames(src, item)
            case b.Request():
                self._on_request(src, item)
            case b.Reply():
                self._on_reply(src, item)
            case b.Control():
                self._on_control(src, item)

    def _on_gap(self, src: str) -> None:
        self._resync_owner(src, "gap")

    def _on_beat(self) -> None:
        # Viewers that left every board here are forgotten.
        for node, viewers in list(self._remote.items()):
            for key in [k for k, v in viewers.items() if not v.viewing]:
                del viewers[key]
                self._metrics.remote_viewers.dec()
            if not viewers:
                del self._remote[node]
        now = time.perf_counter()
        for rid, sent in list(self._sent.items()):
            if now - sent.sent > self._timeout_s:
                del self._sent[rid]
                if not sent.fut.done():
                    sent.fut.set_exception(
                        BoardcastError(
                            ErrorCode.TIMEOUT,
                            "the board's node did not answer; retry with the same request id",
                        )
                    )
        if not self._checking:
            self._checking = True
            asyncio.get_running_loop().create_task(self._check_nodes(), name="bus-check-nodes")
        if self.bus.connected and not self._adopting and self.registry.has_unleased():
            self._adopting = True
            asyncio.get_running_loop().create_task(self._adopt(), name="bus-adopt")

    async def _adopt(self) -> None:
        try:
            await self.registry.adopt_unleased()
        except Exception as e:
            log.warning("lease_adoption_failed", error=repr(e))
        finally:
            self._adopting = False

    async def _check_nodes(self) -> None:
        try:
            nodes = sorted(set(self._remote) | set(self._proxied) | {s.dest for s in self._sent.values()})
            if not nodes:
                return
            alive = await self.bus.alive(nodes)
        except Exception as e:
            log.warning("node_check_failed", error=repr(e))
            return
        finally:
            self._checking = False
        for node, up in alive.items():
            if up:
                continue
            if node in self._remote:
                self._drop_node(node)
            if node in self._proxied or any(s.dest == node for s in self._sent.values()):
                self._owner_gone(node)

    # ------------------------------------------------------------------ introspection

    def remote_viewer_count(self) -> int:
        return sum(len(v) for v in self._remote.values())

    def proxied_count(self) -> int:
        return sum(len(cs) for bs in self._proxied.values() for cs in bs.values())
