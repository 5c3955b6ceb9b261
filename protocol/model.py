"""Board data as it crosses the wire: snapshots of a board, its columns and cards."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

# Bounds on everything a client can send; the decoder enforces them, so handlers never see
# an oversized title or an absurd list.
# No NUL characters: PostgreSQL text cannot hold them, and one such string in a group commit
# would fail the whole batch.
_NO_NUL = "^[^\x00]*$"
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL)]
Text = Annotated[str, msgspec.Meta(max_length=20_000, pattern=_NO_NUL)]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]
Seq = Annotated[int, msgspec.Meta(ge=0)]

# UUIDs that clients send must be in the one form the server sends: 36 characters, lower-case
# hex, hyphenated. msgspec on its own also takes upper-case, 32 hex digits without hyphens and
# (in MessagePack) a 16-byte bin, so a client could send forms that never come back equal to
# what it sent. msgspec has no strict-UUID switch: inbound fields are a custom type decoded by
# `dec_hook`, which refuses every other form (a ValueError: `bad_request` naming the field).
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class CanonicalUUID(uuid.UUID):
    """A UUID that arrived in canonical form; equal to, and hashing like, the same
    :class:`uuid.UUID`."""

    __slots__ = ()


_to_uuid = msgspec.convert
_set = object.__setattr__
_NOT_CANONICAL = "expected a UUID as a lower-case, hyphenated string of 36 characters"


def dec_hook(kind: type, value: Any) -> Any:
    """The ``dec_hook`` of every decoder of inbound types (see :data:`Uuid`)."""
    if kind is CanonicalUUID:
        # Checked for the cheap part in Python (length, case), then parsed by msgspec's C
        # UUID parser, which checks the hex digits and where the hyphens are. About 0.5 µs a
        # UUID on top of msgspec's own parse; a command carries two or three.
        if type(value) is str and len(value) == 36 and value.lower() == value:
            try:
                u = _to_uuid(value, uuid.UUID)
            except msgspec.ValidationError:
                raise ValueError(_NOT_CANONICAL) from None
            # UUID forbids attribute assignment, and building a UUID in Python costs three
            # times as much; the subclass adds no slots, so the parsed object can be it.
            _set(u, "__class__", CanonicalUUID)
            return u
        raise ValueError(_NOT_CANONICAL)
    raise NotImplementedError(f"no decoder for {kind!r}")


if TYPE_CHECKING:
    # For the type checker a field is just a UUID: servers build commands from ids they read
    # from the database (plain uuid.UUID objects), and that is fine at run time too.
    Uuid = uuid.UUID
else:
    Uuid = Annotated[
        CanonicalUUID,
        msgspec.Meta(extra_json_schema={"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
    ]
"""A UUID in a client message or REST body: only the canonical string form decodes (with
:func:`dec_hook`)."""


class Column(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    title: str
    rank: int


class Card(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    column_id: uuid.UUID
    title: str
    description: str = ""
    rank: int


class BoardInfo(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    title: str
    description: str = ""
    seq: int
    role: str = "owner"  # the caller's role
    visibility: str = "private"  # private | signed_in


class BoardSnapshot(msgspec.Struct, kw_only=True):
    """A whole board at one `seq`: columns and cards each sorted by rank."""

    id: uuid.UUID
    title: str
    description: str
    seq: int
    columns: list[Column]
    cards: list[Card]


class PresenceEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One connection of a viewer, with its ephemeral state."""

    conn_id: str
    state: dict[str, str | int | float | bool | None] = {}


class PresenceChange(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One connection's presence in a diff: ``name`` on join, ``state`` on join and update."""

    user_id: uuid.UUID
    conn_id: str
    name: str | None = None
    state: dict[str, str | int | float | bool | None] = {}


class Viewer(msgspec.Struct, kw_only=True):
    """One user viewing a board; several tabs are several connections of one viewer."""

    user_id: uuid.UUID
    name: str
    connections: list[PresenceEntry]
