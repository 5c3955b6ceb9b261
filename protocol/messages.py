"""WebSocket frames: one tagged union per direction, tagged on ``type``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from protocol.commands import Command, Event
from protocol.model import BoardSnapshot, PresenceChange, RequestId, Seq, Uuid, Viewer

# Integers within what JavaScript's JSON.parse reads exactly: presence is relayed to every
# viewer, JSON clients included (docs/PROTOCOL.md, integers in JSON).
SafeInt = Annotated[int, msgspec.Meta(ge=-(2**53 - 1), le=2**53 - 1)]
PresenceState = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=32)],
        Annotated[str, msgspec.Meta(max_length=256)] | SafeInt | float | bool | None,
    ],
    msgspec.Meta(max_length=8),
]


# ---------------------------------------------------------------- client -> server


class _In(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    pass


class Join(_In, tag="join"):
    """Join a board. With ``since_seq`` the reply carries the missed events instead of a
    snapshot (or a snapshot when that history is no longer available)."""

    rid: RequestId
    board_id: Uuid
    since_seq: Seq | None = None


class Leave(_In, tag="leave"):
    rid: RequestId
    board_id: Uuid


class Cmd(_In, tag="cmd"):
    """A command to one board, answered by ``ack`` or ``error`` naming ``rid``."""

    rid: RequestId
    board_id: Uuid
    op: Command


class SetPresence(_In, tag="presence"):
    """Replace this connection's ephemeral state on a board (cursor, focused card...)."""

    board_id: Uuid
    state: PresenceState
    rid: RequestId | None = None


class Ping(_In, tag="ping"):
    rid: RequestId | None = None


ClientMessage = Join | Leave | Cmd | SetPresence | Ping


class RidProbe(msgspec.Struct):
    """Lenient view of a rejected frame, used only to name its request id in the error."""

    rid: Any = None
    board_id: Any = None


# ---------------------------------------------------------------- server -> client


class _Out(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True):
    pass


class Welcome(_Out, tag="welcome"):
    conn_id: str
    user_id: uuid.UUID
    heartbeat_s: float
    max_frame_bytes: int
    protocol: str
    expires_at_ms: int | None = None  # when the connection's token expires (then: close 4003)


class Joined(_Out, tag="joined"):
    rid: str
    board_id: uuid.UUID
    seq: int
    snapshot: BoardSnapshot | None = None
    events: list[EventMsg] | None = None
    viewers: list[Viewer] = []


class Left(_Out, tag="left"):
    board_id: uuid.UUID
    reason: str
    rid: str | None = None


class Access(_Out, tag="access"):
    """The connection's role on a joined board changed; ``None``: no access any more (a
    ``left`` with reason ``access_revoked`` follows)."""

    board_id: uuid.UUID
    role: str | None


class Ack(_Out, tag="ack"):
    rid: str
    board_id: uuid.UUID
    seq: int
    duplicate: bool = False


class ErrorMsg(_Out, tag="error"):
    code: str
    message: str
    rid: str | None = None
    board_id: uuid.UUID | None = None
    details: dict[str, Any] | None = None


class EventMsg(_Out, tag="event"):
    board_id: uuid.UUID
    seq: int
    author: uuid.UUID
    ts_ms: int
    event: Event
    rid: str | None = None


class PresenceDiff(_Out, tag="presence"):
    """Connections that joined, changed state or left since the last diff, applied in the
    order left, joined, updated. Per connection, so one more tab costs every viewer O(1); a
    user whose last connection left is no longer viewing."""

    board_id: uuid.UUID
    left: list[PresenceChange] = []
    joined: list[PresenceChange] = []
    updated: list[PresenceChange] = []


class Pong(_Out, tag="pong"):
    rid: str | None = None


ServerMessage = Welcome | Joined | Left | Access | Ack | ErrorMsg | EventMsg | PresenceDiff | Pong
