"""Commands and events of the board's settings, columns and cards beyond title and place:
colours, WIP limits, archiving, dates, assignees, covers.

Every event here carries the complete entity after the change (or the id of what was
removed), so that a reader of the event log can rebuild the board generically.
"""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from protocol.base import _Command, _Event
from protocol.model import Card, Colour, Column, Millis, Uuid, WipLimit

# ---------------------------------------------------------------- commands


class ConfigureBoard(_Command, tag="board.configure"):
    """Board-wide rules: whether creates and moves may exceed a column's WIP limit."""

    allow_wip_overflow: bool


class ConfigureColumn(_Command, tag="column.configure"):
    """Set a column's colour and WIP limit; a field left out stays, ``null`` clears it."""

    column_id: Uuid
    colour: Colour | msgspec.UnsetType | None = msgspec.UNSET
    wip_limit: WipLimit | msgspec.UnsetType | None = msgspec.UNSET


class ArchiveColumn(_Command, tag="column.archive"):
    column_id: Uuid


class RestoreColumn(_Command, tag="column.restore"):
    column_id: Uuid


class ScheduleCard(_Command, tag="card.schedule"):
    """Set a card's start and due dates and its done flag; a field left out stays, ``null``
    clears a date."""

    card_id: Uuid
    start_ms: Millis | msgspec.UnsetType | None = msgspec.UNSET
    due_ms: Millis | msgspec.UnsetType | None = msgspec.UNSET
    done: bool | msgspec.UnsetType = msgspec.UNSET


class AssignCard(_Command, tag="card.assign"):
    """Add a board member to the card's assignees (assigning twice changes nothing)."""

    card_id: Uuid
    user_id: Uuid


class UnassignCard(_Command, tag="card.unassign"):
    card_id: Uuid
    user_id: Uuid


class SetCover(_Command, tag="card.set_cover"):
    """Show one of the card's attachments as its cover (``null``: none)."""

    card_id: Uuid
    attachment_id: Uuid | None


class ArchiveCard(_Command, tag="card.archive"):
    card_id: Uuid


class RestoreCard(_Command, tag="card.restore"):
    card_id: Uuid


# ---------------------------------------------------------------- events


class BoardConfigured(_Event, tag="board.configured"):
    allow_wip_overflow: bool


class ColumnConfigured(_Event, tag="column.configured"):
    column: Column


class ColumnArchived(_Event, tag="column.archived"):
    column: Column


class ColumnRestored(_Event, tag="column.restored"):
    column: Column


class CardScheduled(_Event, tag="card.scheduled"):
    card: Card


class CardAssigned(_Event, tag="card.assigned"):
    card: Card
    user_id: uuid.UUID


class CardUnassigned(_Event, tag="card.unassigned"):
    card: Card
    user_id: uuid.UUID


class CoverSet(_Event, tag="card.cover_set"):
    card: Card


class CardArchived(_Event, tag="card.archived"):
    card: Card


class CardRestored(_Event, tag="card.restored"):
    card: Card


# What ``column.delete`` does with the cards still in the column.
CardsPolicy = Literal["refuse", "move", "delete"]

CardCommand = (
    ConfigureBoard
    | ConfigureColumn
    | ArchiveColumn
    | RestoreColumn
    | ScheduleCard
    | AssignCard
    | UnassignCard
    | SetCover
    | ArchiveCard
    | RestoreCard
)
CardEvent = (
    BoardConfigured
    | ColumnConfigured
    | ColumnArchived
    | ColumnRestored
    | CardScheduled
    | CardAssigned
    | CardUnassigned
    | CoverSet
    | CardArchived
    | CardRestored
)
