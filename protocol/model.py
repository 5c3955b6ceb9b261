"""Board data as it crosses the wire: snapshots of a board, its columns and cards."""

from __future__ import annotations

import uuid
from typing import Annotated

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
