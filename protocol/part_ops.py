"""Commands and events of what hangs off a card: checklists and their items, comments and
attachments.

Checklists are ordered on their card and items in their checklist with the same integer
ranks as cards (``rebalanced`` when a list had to be spread out again); an item may move to
any checklist of the board.
"""

from __future__ import annotations

import uuid

import msgspec

from protocol.base import RankChange, _Command, _Event
from protocol.model import (
    Attachment,
    Card,
    Checklist,
    ChecklistItem,
    Comment,
    Millis,
    Text,
    Title,
    Uuid,
)

# ---------------------------------------------------------------- checklists


class CreateChecklist(_Command, tag="checklist.create"):
    card_id: Uuid
    title: Title
    after: Uuid | None = None
    before: Uuid | None = None


class RenameChecklist(_Command, tag="checklist.rename"):
    checklist_id: Uuid
    title: Title


class MoveChecklist(_Command, tag="checklist.move"):
    """Place a checklist after or before another of the same card; with neither, last."""

    checklist_id: Uuid
    after: Uuid | None = None
    before: Uuid | None = None


class DeleteChecklist(_Command, tag="checklist.delete"):
    checklist_id: Uuid


class CreateItem(_Command, tag="item.create"):
    checklist_id: Uuid
    text: Title
    after: Uuid | None = None
    before: Uuid | None = None
    assignee_id: Uuid | None = None
    due_ms: Millis | None = None


class UpdateItem(_Command, tag="item.update"):
    """Change an item; a field left out stays, ``null`` clears the assignee or due date."""

    item_id: Uuid
    text: Title | msgspec.UnsetType = msgspec.UNSET
    done: bool | msgspec.UnsetType = msgspec.UNSET
    assignee_id: Uuid | msgspec.UnsetType | None = msgspec.UNSET
    due_ms: Millis | msgspec.UnsetType | None = msgspec.UNSET


class MoveItem(_Command, tag="item.move"):
    """Move an item into ``checklist_id`` (any checklist of the board) after or before an
    item there; with neither, last."""

    item_id: Uuid
    checklist_id: Uuid
    after: Uuid | None = None
    before: Uuid | None = None


class DeleteItem(_Command, tag="item.delete"):
    item_id: Uuid


class ChecklistCreated(_Event, tag="checklist.created"):
    checklist: Checklist
    rebalanced: list[RankChange] = []


class ChecklistRenamed(_Event, tag="checklist.renamed"):
    checklist: Checklist


class ChecklistMoved(_Event, tag="checklist.moved"):
    checklist: Checklist
    rebalanced: list[RankChange] = []


class ChecklistDeleted(_Event, tag="checklist.deleted"):
    checklist_id: uuid.UUID
    item_ids: list[uuid.UUID] = []  # its items, deleted with it


class ItemCreated(_Event, tag="item.created"):
    item: ChecklistItem
    rebalanced: list[RankChange] = []


class ItemUpdated(_Event, tag="item.updated"):
    item: ChecklistItem


class ItemMoved(_Event, tag="item.moved"):
    item: ChecklistItem
    rebalanced: list[RankChange] = []  # in the checklist it moved into


class ItemDeleted(_Event, tag="item.deleted"):
    item_id: uuid.UUID


# ---------------------------------------------------------------- comments


class CreateComment(_Command, tag="comment.create"):
    """A comment on a card; ``@name`` mentions of members are recorded on it."""

    card_id: Uuid
    body: Text


class EditComment(_Command, tag="comment.edit"):
    """Only the comment's author may edit it."""

    comment_id: Uuid
    body: Text


class DeleteComment(_Command, tag="comment.delete"):
    """The author may delete their comment, an admin anyone's."""

    comment_id: Uuid


class CommentCreated(_Event, tag="comment.created"):
    comment: Comment


class CommentEdited(_Event, tag="comment.edited"):
    comment: Comment


class CommentDeleted(_Event, tag="comment.deleted"):
    comment_id: uuid.UUID
    card_id: uuid.UUID


# ---------------------------------------------------------------- attachments


class AddAttachment(_Command, tag="attachment.add"):
    """Record an uploaded file on a card. Only the server's upload route builds this command
    (the blob is already stored); a WebSocket client or a generic REST command sending it is
    refused (server.access.client_may_send)."""

    attachment: Attachment


class DeleteAttachment(_Command, tag="attachment.delete"):
    attachment_id: Uuid


class AttachmentAdded(_Event, tag="attachment.added"):
    attachment: Attachment


class AttachmentDeleted(_Event, tag="attachment.deleted"):
    """The blobs under ``blob_key`` and ``thumb_key`` may be deleted once this is committed.
    ``card`` is the card, complete, when the attachment was its cover (now none)."""

    attachment_id: uuid.UUID
    card_id: uuid.UUID
    blob_key: str
    thumb_key: str | None  # always present (null without a thumbnail)
    card: Card | None = None


PartCommand = (
    CreateChecklist
    | RenameChecklist
    | MoveChecklist
    | DeleteChecklist
    | CreateItem
    | UpdateItem
    | MoveItem
    | DeleteItem
    | CreateComment
    | EditComment
    | DeleteComment
    | AddAttachment
    | DeleteAttachment
)
PartEvent = (
    ChecklistCreated
    | ChecklistRenamed
    | ChecklistMoved
    | ChecklistDeleted
    | ItemCreated
    | ItemUpdated
    | ItemMoved
    | ItemDeleted
    | CommentCreated
    | CommentEdited
    | CommentDeleted
    | AttachmentAdded
    | AttachmentDeleted
)
