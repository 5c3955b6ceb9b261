"""Board commands (what a client asks a board to do) and events (what happened).

Commands are a tagged union on ``op``; events a tagged union on ``kind``. The same command
types are sent by WebSocket clients, built by REST handlers and, later, by automations: the
board actor is the only thing that applies them.
"""

from __future__ import annotations

import uuid

from protocol.base import RankChange, _Command, _Event
from protocol.card_ops import *  # noqa: F403
from protocol.card_ops import CardCommand, CardEvent, CardsPolicy
from protocol.model import Card, Column, Text, Title, Uuid
from protocol.part_ops import *  # noqa: F403
from protocol.part_ops import PartCommand, PartEvent
from protocol.taxonomy_ops import *  # noqa: F403
from protocol.taxonomy_ops import TaxonomyCommand, TaxonomyEvent


class UpdateBoard(_Command, tag="board.update"):
    title: Title | None = None
    description: Text | None = None


class CreateColumn(_Command, tag="column.create"):
    title: Title
    after: Uuid | None = None
    before: Uuid | None = None


class UpdateColumn(_Command, tag="column.update"):
    column_id: Uuid
    title: Title


class MoveColumn(_Command, tag="column.move"):
    """Place a column directly after or before a neighbour; with neither, at the end."""

    column_id: Uuid
    after: Uuid | None = None
    before: Uuid | None = None


class DeleteColumn(_Command, tag="column.delete"):
    """Delete a column. One that still holds cards (archived ones included) is refused
    unless ``cards`` says what happens to them: ``move`` them (in their order, after the
    cards there) to the column ``move_to``, or ``delete`` them with it."""

    column_id: Uuid
    cards: CardsPolicy = "refuse"
    move_to: Uuid | None = None


class CreateCard(_Command, tag="card.create"):
    column_id: Uuid
    title: Title
    description: Text = ""
    after: Uuid | None = None
    before: Uuid | None = None


class UpdateCard(_Command, tag="card.update"):
    card_id: Uuid
    title: Title | None = None
    description: Text | None = None


class MoveCard(_Command, tag="card.move"):
    """Move a card into ``column_id`` after or before a neighbour there; with neither, last."""

    card_id: Uuid
    column_id: Uuid
    after: Uuid | None = None
    before: Uuid | None = None


class DeleteCard(_Command, tag="card.delete"):
    card_id: Uuid


# The author of what the server does by itself (a webhook disabled after failing...).
SYSTEM_AUTHOR = uuid.UUID("00000000-0000-4000-8000-000000000000")


class ReportWebhookDisabled(_Command, tag="webhook.report_disabled"):
    """Sent by the server's webhook dispatcher only (no role may send it): tells the board's
    viewers that one of its webhooks was disabled after failing."""

    webhook_id: Uuid
    host: str
    reason: str
    failures: int


Command = (
    UpdateBoard
    | CreateColumn
    | UpdateColumn
    | MoveColumn
    | DeleteColumn
    | CreateCard
    | UpdateCard
    | MoveCard
    | DeleteCard
    | CardCommand
    | TaxonomyCommand
    | PartCommand
    | ReportWebhookDisabled
)


class BoardUpdated(_Event, tag="board.updated"):
    title: str | None = None
    description: str | None = None


class BoardDeleted(_Event, tag="board.deleted"):
    pass


class ColumnCreated(_Event, tag="column.created"):
    column: Column
    rebalanced: list[RankChange] = []


class ColumnUpdated(_Event, tag="column.updated"):
    column_id: uuid.UUID
    title: str


class ColumnMoved(_Event, tag="column.moved"):
    column_id: uuid.UUID
    rank: int
    rebalanced: list[RankChange] = []


class ColumnDeleted(_Event, tag="column.deleted"):
    column_id: uuid.UUID
    card_ids: list[uuid.UUID] = []  # cards deleted with it
    moved: list[Card] = []  # cards moved out of it, complete, in their new column
    blob_keys: list[str] = []  # of the deleted cards' attachments (and thumbnails)


class CardCreated(_Event, tag="card.created"):
    card: Card
    rebalanced: list[RankChange] = []


class CardUpdated(_Event, tag="card.updated"):
    card_id: uuid.UUID
    title: str | None = None
    description: str | None = None


class CardMoved(_Event, tag="card.moved"):
    card_id: uuid.UUID
    column_id: uuid.UUID
    rank: int
    rebalanced: list[RankChange] = []


class CardDeleted(_Event, tag="card.deleted"):
    card_id: uuid.UUID
    blob_keys: list[str] = []  # of its attachments (and thumbnails), deletable after the commit


class WebhookDisabled(_Event, tag="webhook.disabled"):
    """A webhook of the board was disabled after failing (docs/WEBHOOKS.md); an admin may
    enable it again."""

    webhook_id: uuid.UUID
    host: str  # of its URL (never the path or query, which may hold credentials)
    reason: str
    failures: int  # consecutive failed attempts


Event = (
    BoardUpdated
    | BoardDeleted
    | ColumnCreated
    | ColumnUpdated
    | ColumnMoved
    | ColumnDeleted
    | CardCreated
    | CardUpdated
    | CardMoved
    | CardDeleted
    | CardEvent
    | TaxonomyEvent
    | PartEvent
    | WebhookDisabled
)
