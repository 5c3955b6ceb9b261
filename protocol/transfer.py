"""Board export and import documents: Boardcast's own (versioned) and Trello's, as read.

A Boardcast export names everything by a reference local to the document (``col-1``,
``card-3``...), given in document order, never by database id: importing a document and
exporting the new board gives the same document back, refs and all.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from protocol.model import FieldKind, Millis, Name, Text, Title

EXPORT_FORMAT = "boardcast.board"
EXPORT_VERSION = 1

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern="^[a-z]+-[0-9]{1,9}$")]
Email = Annotated[str, msgspec.Meta(max_length=320)]
Role = Literal["owner", "admin", "member", "commenter", "viewer"]
FieldValue = Annotated[str, msgspec.Meta(max_length=20_000)] | int | float | bool
Colour = Annotated[str, msgspec.Meta(max_length=24)]
_MANY = 100_000


_BOUND = msgspec.Meta(max_length=_MANY)


class _Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class ExportMember(_Doc, kw_only=True):
    ref: Ref
    name: Annotated[str, msgspec.Meta(max_length=200)]
    email: Email | None = None
    role: Role = "member"


class ExportLabel(_Doc, kw_only=True):
    ref: Ref
    name: Name
    colour: Colour


class ExportOption(_Doc, kw_only=True):
    ref: Ref
    name: Name
    colour: Colour | None = None


class ExportField(_Doc, kw_only=True):
    ref: Ref
    name: Name
    kind: FieldKind
    options: Annotated[list[ExportOption], msgspec.Meta(max_length=100)] = []


class ExportColumn(_Doc, kw_only=True):
    ref: Ref
    title: Title
    colour: Colour | None = None
    wip_limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    archived: bool = False


class ExportCard(_Doc, kw_only=True):
    """A card; ``fields`` maps field refs to values, a select field's value is an option ref."""

    ref: Ref
    column: Ref
    title: Title
    description: Text = ""
    start_ms: Millis | None = None
    due_ms: Millis | None = None
    done: bool = False
    assignees: Annotated[list[Ref], msgspec.Meta(max_length=100)] = []
    labels: Annotated[list[Ref], msgspec.Meta(max_length=100)] = []
    fields: Annotated[dict[Ref, FieldValue], msgspec.Meta(max_length=100)] = {}
    archived: bool = False


class ExportItem(_Doc, kw_only=True):
    ref: Ref
    text: Title
    done: bool = False
    assignee: Ref | None = None
    due_ms: Millis | None = None


class ExportChecklist(_Doc, kw_only=True):
    ref: Ref
    card: Ref
    title: Title
    items: Annotated[list[ExportItem], msgspec.Meta(max_length=1_000)] = []


class ExportComment(_Doc, kw_only=True):
    """A comment; ``author`` is a member ref, or null with ``author_name`` when its author is
    not a member of the board (any more)."""

    ref: Ref
    card: Ref
    body: Text
    author: Ref | None = None
    author_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    created_at_ms: Millis | None = None
    edited_at_ms: Millis | None = None


class ExportAttachment(_Doc, kw_only=True):
    """A file on a card: its metadata, and in a zip export (``?files=zip``) where its bytes
    are in the zip."""

    ref: Ref
    card: Ref
    name: Annotated[str, msgspec.Meta(max_length=255)]
    content_type: Annotated[str, msgspec.Meta(max_length=255)]
    size: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    created_at_ms: Millis | None = None
    created_by: Ref | None = None
    cover: bool = False
    file: Annotated[str, msgspec.Meta(pattern="^files/[a-z]+-[0-9]{1,9}$")] | None = None  # in the zip


class BoardExport(_Doc, kw_only=True, omit_defaults=False):
    """One board, complete, as a versioned document. Lists are in board order: columns,
    cards (column by column), labels (by name), fields, checklists (card by card, items in
    order), comments and attachments (oldest first)."""

    format: Literal["boardcast.board"] = "boardcast.board"
    version: Literal[1] = 1
    title: Title
    description: Text = ""
    allow_wip_overflow: bool = False
    members: Annotated[list[ExportMember], _BOUND] = []
    labels: Annotated[list[ExportLabel], _BOUND] = []
    fields: Annotated[list[ExportField], _BOUND] = []
    columns: Annotated[list[ExportColumn], _BOUND] = []
    cards: Annotated[list[ExportCard], _BOUND] = []
    checklists: Annotated[list[ExportChecklist], _BOUND] = []
    comments: Annotated[list[ExportComment], _BOUND] = []
    attachments: Annotated[list[ExportAttachment], _BOUND] = []


# ------------------------------------------------------------------ imports over REST

ImportKind = Literal["boardcast", "trello"]
ImportState = Literal["queued", "running", "succeeded", "failed"]


class Skipped(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Something the import could not carry over, and why."""

    what: str  # "attachment", "comment", "member", "field_value"...
    reason: str
    ref: str | None = None  # the source's id or ref
    name: str | None = None


class ImportReport(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What an import made, what it left out, and whether the source's history was cut."""

    created: dict[str, int] = {}  # "columns", "cards", "comments"... -> how many
    skipped: list[Skipped] = []
    skipped_count: int = 0  # may exceed len(skipped): the list is bounded
    notes: list[str] = []
    history_cut: bool = False  # Trello: the export held only its latest 1,000 actions
    oldest_action_at: str | None = None


class ImportJob(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: uuid.UUID
    kind: ImportKind
    state: ImportState
    done: int
    total: int
    board_id: uuid.UUID | None = None
    report: ImportReport | None = None
    error: str | None = None
    created_at_ms: int
    finished_at_ms: int | None = None


# ------------------------------------------------------------------ Trello, as read
# Only what the import uses; every other field of Trello's export is ignored. Trello's own
# bounds are far below these.

_TStr = Annotated[str, msgspec.Meta(max_length=100_000)]
_TId = Annotated[str, msgspec.Meta(max_length=64)]


class _T(msgspec.Struct, kw_only=True):
    pass


class TrelloLabel(_T, kw_only=True):
    id: _TId
    name: _TStr | None = ""
    color: _TStr | None = None


class TrelloList(_T, kw_only=True):
    id: _TId
    name: _TStr = ""
    closed: bool = False
    pos: float = 0
    softLimit: _TStr | int | None = None  # the list's work-in-progress limit, as Trello keeps it


class TrelloCheckItem(_T, kw_only=True):
    id: _TId
    name: _TStr = ""
    state: _TStr = "incomplete"
    pos: float = 0
    due: _TStr | None = None
    idMember: _TId | None = None


class TrelloChecklist(_T, kw_only=True):
    id: _TId
    idCard: _TId
    name: _TStr = ""
    pos: float = 0
    checkItems: Annotated[list[TrelloCheckItem], msgspec.Meta(max_length=10_000)] = []


class TrelloAttachment(_T, kw_only=True):
    id: _TId
    name: _TStr | None = ""
    url: _TStr | None = ""
    bytes: int | None = None
    mimeType: _TStr | None = None
    isUpload: bool = False


class TrelloOptionValue(_T, kw_only=True):
    text: _TStr = ""


class TrelloFieldOption(_T, kw_only=True):
    id: _TId
    value: TrelloOptionValue = msgspec.field(default_factory=TrelloOptionValue)
    color: _TStr | None = None
    pos: float = 0


class TrelloCustomField(_T, kw_only=True):
    id: _TId
    name: _TStr = ""
    type: _TStr = "text"
    pos: float = 0
    options: Annotated[list[TrelloFieldOption], msgspec.Meta(max_length=1_000)] = []


class TrelloFieldItem(_T, kw_only=True):
    idCustomField: _TId
    value: dict[str, _TStr] | None = None
    idValue: _TId | None = None


class TrelloCard(_T, kw_only=True):
    id: _TId
    name: _TStr = ""
    desc: _TStr = ""
    idList: _TId
    closed: bool = False
    pos: float = 0
    due: _TStr | None = None
    start: _TStr | None = None
    dueComplete: bool = False
    idLabels: Annotated[list[_TId], msgspec.Meta(max_length=1_000)] = []
    idMembers: Annotated[list[_TId], msgspec.Meta(max_length=1_000)] = []
    attachments: Annotated[list[TrelloAttachment], msgspec.Meta(max_length=10_000)] = []
    customFieldItems: Annotated[list[TrelloFieldItem], msgspec.Meta(max_length=1_000)] = []


class TrelloMember(_T, kw_only=True):
    id: _TId
    fullName: _TStr | None = ""
    username: _TStr | None = ""
    email: _TStr | None = None


class TrelloMembership(_T, kw_only=True):
    idMember: _TId
    memberType: _TStr = "normal"


class TrelloActionCard(_T, kw_only=True):
    id: _TId


class TrelloActionData(_T, kw_only=True):
    text: _TStr | None = None
    card: TrelloActionCard | None = None


class TrelloAction(_T, kw_only=True):
    id: _TId
    type: _TStr
    date: _TStr = ""
    idMemberCreator: _TId | None = None
    memberCreator: TrelloMember | None = None
    data: TrelloActionData = msgspec.field(default_factory=TrelloActionData)


class TrelloBoard(_T, kw_only=True):
    id: _TId
    name: _TStr = ""
    desc: _TStr = ""
    lists: Annotated[list[TrelloList], _BOUND] = []
    cards: Annotated[list[TrelloCard], _BOUND] = []
    labels: Annotated[list[TrelloLabel], _BOUND] = []
    checklists: Annotated[list[TrelloChecklist], _BOUND] = []
    customFields: Annotated[list[TrelloCustomField], msgspec.Meta(max_length=1_000)] = []
    members: Annotated[list[TrelloMember], _BOUND] = []
    memberships: Annotated[list[TrelloMembership], _BOUND] = []
    actions: Annotated[list[TrelloAction], _BOUND] = []
