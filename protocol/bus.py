"""What crosses Redis between Boardcast processes: the command bus's messages.

Every process (a server node, a job worker, a CLI, a test) has an inbox, one Redis stream, and
reads it with one blocking read. A process sends a board's owner a :class:`Request` (a
command, a join, a presence change...) in the owner's inbox; the owner answers with a
:class:`Reply` in the sender's inbox and pushes what the board sends a viewer of the sender's
(acks, events, presence, `joined`, access changes) as :class:`Frames` and :class:`Control`
items, in the order the board produced them. Several items to one process travel in one
:class:`Parcel`, numbered per link so that a receiver notices one it never got.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from protocol.commands import Command
from protocol.messages import EventMsg


class _Body(msgspec.Struct, kw_only=True, tag_field="t", array_like=False):
    pass


class ExecuteBody(_Body, tag="exec"):
    author: uuid.UUID
    rid: str | None
    cmd: Command
    # The viewer's connection on the sender (None: a REST call, a job, a CLI)
    conn_id: str | None = None


class SubscribeBody(_Body, tag="sub"):
    conn_id: str
    user_id: uuid.UUID
    user_name: str
    codec: str  # the connection's wire format: "msgpack" or "json"
    rid: str
    since_seq: int | None
    # The sender's id of this subscription: what the owner sends for it is addressed to it,
    # so that nothing of an earlier subscription (an activation that since lost the board)
    # reaches the viewer's next one.
    sub: int = 0


class UnsubscribeBody(_Body, tag="unsub"):
    conn_id: str


class PresenceBody(_Body, tag="presence"):
    conn_id: str
    state: dict[str, Any]


class AccessBody(_Body, tag="access"):
    user_id: uuid.UUID | None


class SnapshotBody(_Body, tag="snapshot"):
    json: bool = False  # the snapshot already encoded as JSON (REST), else the struct


class DeleteBody(_Body, tag="delete"):
    author: uuid.UUID


Body = ExecuteBody | SubscribeBody | UnsubscribeBody | PresenceBody | AccessBody | SnapshotBody | DeleteBody


# A MessagePack nil, the default of the fields below that carry an already encoded value
# (msgspec cannot decode a Raw inside a union with None).
NIL = msgspec.Raw(b"\xc0")


class _Item(msgspec.Struct, kw_only=True, tag_field="k"):
    pass


class Request(_Item, tag="req"):
    id: int  # the sender's, unique per sender: the reply names it (0: no reply wanted)
    board_id: uuid.UUID
    body: Body
    # Route it further if this process does not own the board (a process that is not a
    # server sends to any live node); otherwise a non-owner answers `not_owner`.
    route: bool = False


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ExecuteResult(msgspec.Struct, kw_only=True):
    seq: int
    duplicate: bool
    event: EventMsg | None = None
    entity_kind: str | None = None  # the name of the entity's protocol.model Struct
    entity: msgspec.Raw = NIL


class Reply(_Item, tag="rep"):
    id: int
    # On success the answer, encoded by the body's kind: ExecuteResult, the seq of a join,
    # a BoardSnapshot, snapshot JSON bytes, or nil.
    value: msgspec.Raw = NIL
    error: ErrorInfo | None = None
    not_owner: bool = False  # the board is not active here: nothing was done; route again


class Frames(_Item, tag="frames"):
    """One WebSocket frame (already built for the connections' codec) for connections of the
    receiving process."""

    board_id: uuid.UUID  # the board that sent it
    frame: bytes
    subs: list[int]  # the receiver's subscription ids (SubscribeBody.sub) it is for


class Control(_Item, tag="ctl"):
    """A call the board made on a remote viewer: ``closed`` (the board closed for it, with
    ``reason``) or ``access`` (its grant changed to ``grant``, nil: none)."""

    conn_id: str
    board_id: uuid.UUID
    op: str
    sub: int = 0  # the subscription it is about (SubscribeBody.sub)
    reason: str = ""
    grant: msgspec.Raw = NIL


Item = Request | Reply | Frames | Control


class Parcel(msgspec.Struct, kw_only=True, array_like=True):
    src: str  # the sending process's node id
    n: int  # numbered per (sender, receiver) link from 1, for gap detection
    items: list[Item]
