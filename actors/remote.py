"""A viewer whose connection lives on another node, as the board's owner sees it (one per
connection and board).

The owner's board actor treats it like any local connection (see
:class:`actors.messages.Subscriber`): what the board sends it (the `joined`, acks, events,
presence) goes over the bus as frames already built for the viewer's codec, in the order the
board produced them, and the calls the board makes on it (closed, access changed) travel as
:class:`protocol.bus.Control` items behind those frames, to the real connection, which reacts
as it would to a local board. What the board needs answered at once (may this viewer apply
this command, does it keep the board under this grant) is decided here by the same
:class:`ViewerPolicy` the server's connections use.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol

import msgspec

from protocol.bus import Control
from protocol.codec import Codec
from protocol.commands import Command
from protocol.errors import BoardcastError, ErrorCode
from protocol.messages import ServerMessage

if TYPE_CHECKING:
    from actors.bus import Bus


class ViewerPolicy(Protocol):
    """The server's rules for a viewer's grant (opaque to the actors)."""

    def keeps(self, grant: object | None) -> bool:
        """Whether a viewer with this grant (None: no access) keeps the board."""

    def refusal(self, grant: object, cmd: Command, own: bool = True) -> BoardcastError | None:
        """Why a viewer with this grant may not apply ``cmd`` (None: it may); ``own``: whether
        the viewer wrote what the command is about (a comment)."""

    def encode_grant(self, grant: object | None) -> bytes: ...

    def decode_grant(self, data: bytes) -> object | None: ...


_JOINING = object()  # a board whose Subscribe is on its way: no grant yet


class RemoteViewer:
    """One connection of another node (``node``) viewing one board of this node."""

    __slots__ = (
        "_bus",
        "_policy",
        "board_id",
        "codec",
        "conn_id",
        "grant",
        "node",
        "sub",
        "user_id",
        "user_name",
    )

    def __init__(
        self,
        node: str,
        board_id: uuid.UUID,
        conn_id: str,
        user_id: uuid.UUID,
        user_name: str,
        codec: Codec,
        bus: Bus,
        policy: ViewerPolicy,
        sub: int = 0,
    ) -> None:
        self.node = node
        self.sub = sub  # the viewer's node's id of this subscription
        self.board_id = board_id
        self.conn_id = conn_id
        self.user_id = user_id
        self.user_name = user_name
        self.codec = codec
        self._bus = bus
        self._policy = policy
        # None: not (or no longer) viewing; _JOINING until the board has read its access
        self.grant: object | None = _JOINING

    @property
    def viewing(self) -> bool:
        return self.grant is not None

    def leave(self) -> None:
        self.grant = None

    def send(self, msg: ServerMessage) -> None:
        self.send_frame(self.codec.frame([self.codec.encode(msg)]))

    def send_frame(self, frame: bytes) -> None:
        self._bus.send_frame(self.node, self.board_id, frame, self.sub)

    def board_closed(self, board_id: uuid.UUID, reason: str) -> None:
        if self.grant is not None:
            self.grant = None
            self._bus.send(
                self.node,
                Control(conn_id=self.conn_id, board_id=board_id, op="closed", reason=reason, sub=self.sub),
            )

    def joining(self, board_id: uuid.UUID) -> bool:
        return self.grant is not None

    def access_changed(self, board_id: uuid.UUID, grant: object | None) -> bool:
        if self.grant is None:
            return False
        keeps = self._policy.keeps(grant)
        self.grant = grant if keeps else None
        raw = msgspec.Raw(self._policy.encode_grant(grant))
        self._bus.send(
            self.node, Control(conn_id=self.conn_id, board_id=board_id, op="access", grant=raw, sub=self.sub)
        )
        return keeps

    def refusal(self, board_id: uuid.UUID, cmd: Command, own: bool = True) -> BoardcastError | None:
        grant = self.grant
        if grant is None or grant is _JOINING:
            return BoardcastError(ErrorCode.NOT_JOINED, "not joined to this board")
        return self._policy.refusal(grant, cmd, own)
