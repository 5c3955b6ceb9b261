"""What a board actor is sent and answers, and what it sees of a connection viewing it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from protocol import commands as c
from protocol.codec import Codec
from protocol.errors import BoardcastError
from protocol.messages import EventMsg, ServerMessage

# (board_id, user ids) -> each user's grant on the board; a user without access is left out.
# The grants are opaque to the actor: the server decides them (server.access) and the
# subscriber interprets them.
AccessLookup = Callable[[uuid.UUID, Sequence[uuid.UUID]], Awaitable[Mapping[uuid.UUID, object]]]


class Subscriber(Protocol):
    """A connection viewing a board, as the actor sees it. Every method must return at once."""

    conn_id: str
    user_id: uuid.UUID
    user_name: str
    codec: Codec

    def send(self, msg: ServerMessage) -> None: ...

    def send_frame(self, frame: bytes) -> None:
        """A complete WebSocket frame built by :meth:`Codec.frame` for this codec."""

    def board_closed(self, board_id: uuid.UUID, reason: str) -> None: ...

    def joining(self, board_id: uuid.UUID) -> bool:
        """Whether the connection still wants this board (it has not given up a join)."""

    def access_changed(self, board_id: uuid.UUID, grant: object | None) -> bool:
        """The viewer's access to this board is now ``grant``, as the :data:`AccessLookup`
        answered (None: none). Returns whether the viewer keeps the board."""

    def refusal(self, board_id: uuid.UUID, cmd: c.Command, own: bool = True) -> BoardcastError | None:
        """Why this viewer may not apply ``cmd`` to the board now (None: it may), by the
        grant :meth:`access_changed` keeps current; ``own``: whether the viewer wrote what
        the command is about (a comment), as the board knows it. Asked when the command is applied, in
        mailbox order, so a removal or demotion the actor has already processed holds for
        every command behind it, however long the command waited in the mailbox."""


@dataclass(frozen=True, slots=True)
class BoardSettings:
    recent_events: int = 1024  # in-memory resume buffer
    max_resume_events: int = 10_000  # beyond this a resuming client gets a snapshot
    remembered_requests: int = 10_000  # request ids kept for de-duplication
    idle_passivate_s: float = 60.0
    presence_interval_s: float = 0.05
    max_batch: int = 512


# ------------------------------------------------------------------ messages


@dataclass(slots=True)
class Execute:
    """Apply one command. The reply future gets a :class:`CommandResult` or the error; a
    WebSocket ``origin`` also gets its ack pushed by the actor, ahead of the event, and turns
    a failed future (a refusal, a crash, a stop) into an error frame naming the rid."""

    author: uuid.UUID
    rid: str | None
    cmd: c.Command
    origin: Subscriber | None = None
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    seq: int
    duplicate: bool
    event: EventMsg | None
    # The entity (column, card, label, checklist, comment...) as this command left it, for
    # REST replies; None for deletes, board updates and duplicates.
    entity: msgspec.Struct | None = None


@dataclass(slots=True)
class Subscribe:
    """Add a viewer. The actor reads the viewer's access again first, in mailbox order: a
    membership change that committed before that read is seen by it, one that commits after
    it sends its AccessChanged behind this Subscribe. Either way no stale grant outlives the
    join, and a join the connection has given up (a timeout) subscribes nothing."""

    sub: Subscriber
    rid: str
    since_seq: int | None


@dataclass(slots=True)
class Unsubscribe:
    conn_id: str


@dataclass(slots=True)
class SetPresenceState:
    conn_id: str
    state: dict[str, Any]


@dataclass(slots=True)
class AccessChanged:
    """``user_id``'s access (None: every viewer's) may have changed: sent after the change
    commits. The actor reads the viewers' access again when it processes this, in mailbox
    order, so it always applies the latest committed state, whatever order such messages
    arrive in, and nothing it sends afterwards reaches someone who lost access."""

    user_id: uuid.UUID | None


@dataclass(slots=True)
class GetSnapshot:
    pass


@dataclass(slots=True)
class GetSnapshotJson:
    """The snapshot already encoded as JSON; cached per seq, so repeated reads of an
    unchanged board cost one dictionary lookup."""


@dataclass(slots=True)
class DeleteBoard:
    author: uuid.UUID
