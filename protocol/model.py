"""Board data as it crosses the wire: snapshots of a board, its columns and cards."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

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


# Times on the board (start and due dates, comment times) are milliseconds since the Unix
# epoch, like ``ts_ms``; bounded to 0..2**53 so that every JSON client reads them exactly.
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_NO_NUL)]
# A colour: "#rrggbb" (lower-case hex) or a palette name such as "green" or "sky_light".
Colour = Annotated[str, msgspec.Meta(pattern="^(#[0-9a-f]{6}|[a-z][a-z_]{0,23})$")]
WipLimit = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
FieldKind = Literal["text", "number", "date", "checkbox", "select"]
# A custom field's value on a card: text (str), number (float), date (int ms), checkbox (bool),
# select (an option id as a string). The board checks the value against the field's kind.
FieldValue = str | int | float | bool


# The board's entities are not tracked by the garbage collector (gc=False): they hold ids,
# scalars and lists or dicts of them, so they can never be part of a reference cycle, and a
# board of 10,000 cards holds 34,000 of them, which every full collection would walk.


class Column(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    title: str
    rank: int
    colour: str | None = None
    wip_limit: int | None = None  # most unarchived cards the column takes (None: no limit)
    archived: bool = False


class Card(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    column_id: uuid.UUID
    title: str
    description: str = ""  # Markdown
    rank: int
    start_ms: int | None = None
    due_ms: int | None = None
    done: bool = False
    assignees: list[uuid.UUID] = []  # member user ids, in the order they were assigned
    label_ids: list[uuid.UUID] = []
    cover_id: uuid.UUID | None = None  # one of the card's attachments
    archived: bool = False
    fields: dict[uuid.UUID, FieldValue] = {}  # custom field id -> value


class Label(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    name: str
    colour: str


class FieldOption(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    name: str
    colour: str | None = None


class CustomField(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    name: str
    kind: FieldKind
    options: list[FieldOption] = []  # select fields only
    rank: int  # fields are shown in rank order


class Checklist(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    card_id: uuid.UUID
    title: str
    rank: int  # among the card's checklists


class ChecklistItem(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    checklist_id: uuid.UUID
    card_id: uuid.UUID  # the card of its checklist
    text: str
    rank: int  # within its checklist
    done: bool = False
    assignee_id: uuid.UUID | None = None
    due_ms: int | None = None


class Comment(msgspec.Struct, kw_only=True, gc=False):
    id: uuid.UUID
    card_id: uuid.UUID
    author_id: uuid.UUID
    body: str  # Markdown
    mentions: list[uuid.UUID] = []  # members named with @name in the body
    created_at_ms: int
    edited_at_ms: int | None = None


class Attachment(msgspec.Struct, kw_only=True, gc=False):
    """A file on a card. Built only by the server's upload route (``attachment.add``), after
    the blob is stored under ``blob_key`` (and its thumbnail under ``thumb_key``)."""

    # Plain UUIDs (not the canonical-only inbound type): the server builds this, and the
    # events carrying it decode without the inbound dec_hook.
    id: uuid.UUID
    card_id: uuid.UUID
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=_NO_NUL)]
    content_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=_NO_NUL)]
    size: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    blob_key: Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=_NO_NUL)]
    thumb_key: Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=_NO_NUL)] | None = None
    created_by: uuid.UUID
    created_at_ms: Millis


class BoardInfo(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    title: str
    description: str = ""
    seq: int
    role: str = "owner"  # the caller's role
    visibility: str = "private"  # private | signed_in


class BoardSnapshot(msgspec.Struct, kw_only=True):
    """A whole board at one `seq`: columns and cards each sorted by rank (cards grouped by
    column in column order), labels by name, custom fields, checklists and items by rank
    (grouped by card and checklist), comments and attachments oldest first. Archived cards and
    columns are included, flagged."""

    id: uuid.UUID
    title: str
    description: str
    seq: int
    columns: list[Column]
    cards: list[Card]
    allow_wip_overflow: bool = False
    labels: list[Label] = []
    fields: list[CustomField] = []
    checklists: list[Checklist] = []
    items: list[ChecklistItem] = []
    comments: list[Comment] = []
    attachments: list[Attachment] = []


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
