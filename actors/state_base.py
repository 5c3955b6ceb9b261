"""What every part of a board's state holds, and the lookups and checks they share.

The rules are split by concept (actors/state.py: columns and cards; state_cards.py: card
details, labels and custom fields; state_parts.py: checklists, comments and attachments), all
over this one set of dictionaries. Entities in the state are changed by replacing their list
and dict fields, never by mutating them in place: an event holds a shallow copy of its entity,
encoded only when the batch commits, after later commands of the batch have run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from actors.ranks import RankedList
from protocol.base import RankChange
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import (
    Attachment,
    Card,
    Checklist,
    ChecklistItem,
    Column,
    Comment,
    CustomField,
    Label,
)

if TYPE_CHECKING:
    from actors.snapshot_cache import EntityBytes

Ranked = Column | Card | Checklist | ChecklistItem

TABLES = ("columns", "cards", "labels", "fields", "checklists", "items", "comments", "attachments")


def conflict(message: str, **details: object) -> BoardcastError:
    return BoardcastError(ErrorCode.CONFLICT, message, details or None)


class StateBase:
    id: uuid.UUID
    owner_id: uuid.UUID
    allow_wip_overflow: bool
    columns: dict[uuid.UUID, Column]
    cards: dict[uuid.UUID, Card]
    labels: dict[uuid.UUID, Label]
    fields: dict[uuid.UUID, CustomField]
    checklists: dict[uuid.UUID, Checklist]
    items: dict[uuid.UUID, ChecklistItem]
    comments: dict[uuid.UUID, Comment]
    attachments: dict[uuid.UUID, Attachment]
    members: dict[uuid.UUID, str]
    column_order: RankedList
    card_order: dict[uuid.UUID, RankedList]  # column id -> its cards
    checklist_order: dict[uuid.UUID, RankedList]  # card id -> its checklists
    item_order: dict[uuid.UUID, RankedList]  # checklist id -> its items
    card_comments: dict[uuid.UUID, list[uuid.UUID]]  # card id -> its comments, oldest first
    card_attachments: dict[uuid.UUID, list[uuid.UUID]]  # card id -> its attachments
    active: dict[uuid.UUID, int]  # column id -> how many unarchived cards it holds
    _dirty: dict[str, set[uuid.UUID]]
    entity_bytes: EntityBytes  # each entity's encoding for snapshots, until touched

    def _touch(self, table: str, item_id: uuid.UUID) -> None:
        """Mark an entity changed (or deleted): persisted with the next batch, encoded again
        for the next snapshot."""
        self._dirty[table].add(item_id)
        self.entity_bytes.forget(table, item_id)

    def _rerank(
        self, store: Mapping[uuid.UUID, Ranked], table: str, moved: list[tuple[uuid.UUID, int]]
    ) -> list[RankChange]:
        """Give the items a rebalance moved their new ranks; the changes for the event."""
        for item_id, rank in moved:
            store[item_id].rank = rank
            self._touch(table, item_id)
        return [RankChange(i, r) for i, r in moved]

    # ------------------------------------------------------------------ lookups

    def _column(self, column_id: uuid.UUID) -> Column:
        col = self.columns.get(column_id)
        if col is None:
            raise not_found("column", column_id)
        return col

    def _card(self, card_id: uuid.UUID) -> Card:
        card = self.cards.get(card_id)
        if card is None:
            raise not_found("card", card_id)
        return card

    def _label(self, label_id: uuid.UUID) -> Label:
        label = self.labels.get(label_id)
        if label is None:
            raise not_found("label", label_id)
        return label

    def _field(self, field_id: uuid.UUID) -> CustomField:
        found = self.fields.get(field_id)
        if found is None:
            raise not_found("field", field_id)
        return found

    def _checklist(self, checklist_id: uuid.UUID) -> Checklist:
        found = self.checklists.get(checklist_id)
        if found is None:
            raise not_found("checklist", checklist_id)
        return found

    def _item(self, item_id: uuid.UUID) -> ChecklistItem:
        found = self.items.get(item_id)
        if found is None:
            raise not_found("item", item_id)
        return found

    def _comment(self, comment_id: uuid.UUID) -> Comment:
        found = self.comments.get(comment_id)
        if found is None:
            raise not_found("comment", comment_id)
        return found

    def _attachment(self, attachment_id: uuid.UUID) -> Attachment:
        found = self.attachments.get(attachment_id)
        if found is None:
            raise not_found("attachment", attachment_id)
        return found

    def _member(self, user_id: uuid.UUID) -> None:
        if user_id not in self.members:
            raise bad_request("not a member of this board", user_id=str(user_id))

    # ------------------------------------------------------------------ checks

    def _check_neighbours(
        self,
        order: RankedList,
        item_id: uuid.UUID | None,
        after: uuid.UUID | None,
        before: uuid.UUID | None,
        kind: str,
    ) -> None:
        if after is not None and before is not None:
            raise bad_request("give at most one of 'after' and 'before'")
        for ref in (after, before):
            if ref is None:
                continue
            if ref == item_id:
                raise bad_request(f"a {kind} cannot be placed next to itself")
            if ref not in order:
                known: dict[str, Mapping[uuid.UUID, object]] = {
                    "card": self.cards,
                    "column": self.columns,
                    "checklist": self.checklists,
                    "item": self.items,
                }
                if ref in known.get(kind, {}):
                    parent = {"card": "column", "checklist": "card", "item": "checklist"}.get(kind, "list")
                    raise bad_request(f"neighbour {kind} is in another {parent}", neighbour=str(ref))
                raise not_found(kind, ref)

    def _check_wip(self, col: Column, adding: int) -> None:
        """Refuse putting ``adding`` more unarchived cards into ``col`` past its WIP limit,
        unless the board allows it."""
        if col.wip_limit is None or adding <= 0 or self.allow_wip_overflow:
            return
        now = self.active.get(col.id, 0)
        if now + adding > col.wip_limit:
            raise conflict(
                f"the column's work-in-progress limit is {col.wip_limit}",
                reason="wip_limit",
                column_id=str(col.id),
                limit=col.wip_limit,
                cards=now,
            )

    def _open_column(self, column_id: uuid.UUID) -> Column:
        col = self._column(column_id)
        if col.archived:
            raise conflict("the column is archived; restore it first", column_id=str(col.id))
        return col

    # ------------------------------------------------------------------ removal of a card's parts

    def _drop_card(self, card: Card) -> list[str]:
        """Remove a card and everything on it (checklists, items, comments, attachments) from
        the state; returns its attachments' blob keys (thumbnails included)."""
        blob_keys: list[str] = []
        for att_id in self.card_attachments.pop(card.id, []):
            att = self.attachments.pop(att_id)
            blob_keys.append(att.blob_key)
            if att.thumb_key is not None:
                blob_keys.append(att.thumb_key)
            self._touch("attachments", att_id)
        for comment_id in self.card_comments.pop(card.id, []):
            del self.comments[comment_id]
            self._touch("comments", comment_id)
        order = self.checklist_order.pop(card.id, None)
        for cl_id in order.ids() if order is not None else []:
            self._drop_checklist(cl_id)
        self.card_order[card.column_id].remove(card.id)
        if not card.archived:
            self.active[card.column_id] -= 1
        del self.cards[card.id]
        self._touch("cards", card.id)
        return blob_keys

    def _drop_checklist(self, checklist_id: uuid.UUID) -> list[uuid.UUID]:
        item_ids = self.item_order.pop(checklist_id).ids()
        for item_id in item_ids:
            del self.items[item_id]
            self._touch("items", item_id)
        del self.checklists[checklist_id]
        self._touch("checklists", checklist_id)
        return item_ids
