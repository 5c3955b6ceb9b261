"""History as it crosses the wire: the activity feed and a card's history (REST, JSON)."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from protocol.commands import Event
from protocol.model import Attachment, Card, Checklist, ChecklistItem, Comment


class Author(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str | None  # None when the user no longer exists


class ActivityItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event of the log, readable: who, when, a one-line summary and the event itself."""

    seq: int
    kind: str
    at: dt.datetime  # RFC 3339, UTC
    author: Author
    summary: str
    event: Event
    request_id: str | None = None


class ActivityPage(msgspec.Struct, kw_only=True):
    """A page of the feed; pass ``next_cursor`` back as ``cursor`` for the next one (null:
    there is no more)."""

    items: list[ActivityItem]
    next_cursor: str | None


class CardStep(msgspec.Struct, kw_only=True):
    """A card right after one event that changed it or what hangs off it; ``card`` is null
    (and the lists empty) once it is deleted."""

    seq: int
    kind: str
    at: dt.datetime
    author: Author
    event: Event
    card: Card | None
    checklists: list[Checklist] = []
    items: list[ChecklistItem] = []
    comments: list[Comment] = []
    attachments: list[Attachment] = []


class CardHistory(msgspec.Struct, kw_only=True):
    card_id: uuid.UUID
    steps: list[CardStep]
    next_cursor: str | None
