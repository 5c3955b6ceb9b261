"""A board's ordered state and the pure rules that turn commands into events.

No I/O: the board actor owns one ``BoardState``, applies commands to it, and persists what
changed (``take_batch``). A rejected command raises :class:`BoardcastError` and leaves the
state untouched (every check happens before the first mutation).

This module holds the board, its columns and the cards' place; card details, labels and
custom fields are in actors/state_cards.py, checklists, comments and attachments in
actors/state_parts.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from actors.ranks import RankedList
from actors.snapshot_cache import EntityBytes, SnapshotWire
from actors.state_base import TABLES, conflict
from actors.state_cards import CardRules
from actors.state_parts import PartRules
from protocol import commands as c
from protocol.codec import Codec
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import BoardSnapshot, Card, Column
from storage import Batch, LoadedBoard

_copy = msgspec.structs.replace
# Where an event keeps the entity a REST reply answers with (the first one it has).
_ENTITY_FIELDS = ("card", "column", "label", "field", "checklist", "item", "comment", "attachment")


class BoardState(CardRules, PartRules):
    def __init__(self, loaded: LoadedBoard) -> None:
        self.id = loaded.id
        self.title = loaded.title
        self.description = loaded.description
        self.owner_id = loaded.owner_id
        self.seq = loaded.seq
        self.allow_wip_overflow = loaded.allow_wip_overflow
        self.members = dict(loaded.members)
        self.columns = {col.id: col for col in loaded.columns}
        self.cards = {card.id: card for card in loaded.cards}
        self.labels = {label.id: label for label in loaded.labels}
        self.fields = {f.id: f for f in loaded.fields}
        self.checklists = {cl.id: cl for cl in loaded.checklists}
        self.items = {item.id: item for item in loaded.items}
        self.comments = {cm.id: cm for cm in loaded.comments}
        self.attachments = {a.id: a for a in loaded.attachments}
        self.column_order = RankedList([(col.id, col.rank) for col in loaded.columns])
        self.card_order = _orders(
            self.columns, [(card.column_id, card.id, card.rank) for card in loaded.cards]
        )
        # Only cards that have checklists get an order (most cards have none).
        self.checklist_order = _orders({}, [(cl.card_id, cl.id, cl.rank) for cl in loaded.checklists])
        self.item_order = _orders(
            self.checklists, [(item.checklist_id, item.id, item.rank) for item in loaded.items]
        )
        self.card_comments = {}
        for cm in loaded.comments:
            self.card_comments.setdefault(cm.card_id, []).append(cm.id)
        self.card_attachments = {}
        for a in loaded.attachments:
            self.card_attachments.setdefault(a.card_id, []).append(a.id)
        self.active = {col_id: 0 for col_id in self.columns}
        for card in loaded.cards:
            if not card.archived:
                self.active[card.column_id] += 1
        self._dirty = {table: set() for table in TABLES}
        self.entity_bytes = EntityBytes()

    # ------------------------------------------------------------------ reads

    def _ordered(self) -> dict[str, list[uuid.UUID]]:
        """Each table's ids in snapshot order (see BoardSnapshot)."""
        columns = self.column_order.ids()
        cards = [i for col in columns for i in self.card_order[col].ids()]
        checklists = [i for card in cards for i in self._ids(self.checklist_order, card)]
        return {
            "columns": columns,
            "cards": cards,
            "labels": [x.id for x in sorted(self.labels.values(), key=lambda x: (x.name, str(x.id)))],
            "fields": [f.id for f in sorted(self.fields.values(), key=lambda f: f.rank)],
            "checklists": checklists,
            "items": [i for cl in checklists for i in self.item_order[cl].ids()],
            "comments": list(self.comments),
            "attachments": list(self.attachments),
        }

    def _stores(self) -> dict[str, dict[uuid.UUID, Any]]:
        return {
            "columns": self.columns,
            "cards": self.cards,
            "labels": self.labels,
            "fields": self.fields,
            "checklists": self.checklists,
            "items": self.items,
            "comments": self.comments,
            "attachments": self.attachments,
        }

    def snapshot(self, ordered: dict[str, list[uuid.UUID]] | None = None) -> BoardSnapshot:
        stores = self._stores()
        rows = {table: [stores[table][i] for i in ids] for table, ids in (ordered or self._ordered()).items()}
        return BoardSnapshot(
            id=self.id,
            title=self.title,
            description=self.description,
            seq=self.seq,
            allow_wip_overflow=self.allow_wip_overflow,
            **rows,
        )

    def encoded_snapshot(self, codec: Codec) -> bytes:
        """``codec.encode(self.snapshot())``, the same bytes, spliced from each entity's kept
        encoding (see actors/snapshot_cache.py)."""
        ordered = self._ordered()
        cache = self.entity_bytes
        if codec.name not in cache:
            whole = codec.encode(self.snapshot(ordered))
            cache.fill(codec, ordered, whole)
            return whole
        stores = self._stores()
        rows = {table: cache.raws(codec, table, ids, stores[table]) for table, ids in ordered.items()}
        return codec.encode(
            SnapshotWire(
                id=self.id,
                title=self.title,
                description=self.description,
                seq=self.seq,
                allow_wip_overflow=self.allow_wip_overflow,
                **rows,
            )
        )

    @staticmethod
    def _ids(orders: dict[uuid.UUID, RankedList], key: uuid.UUID) -> list[uuid.UUID]:
        order = orders.get(key)
        return order.ids() if order is not None else []

    def entity_after(self, event: c.Event) -> Any:
        """A copy of the entity an event is about, as it is now (None if gone, or if the
        event is about no single entity)."""
        found: Column | Card | None = None
        match event:
            case c.ColumnCreated():
                found = self.columns.get(event.column.id)
            case c.ColumnUpdated() | c.ColumnMoved():
                found = self.columns.get(event.column_id)
            case c.CardCreated():
                found = self.cards.get(event.card.id)
            case c.CardUpdated() | c.CardMoved():
                found = self.cards.get(event.card_id)
            case _:
                # The new events carry their entity complete (a copy taken when applied).
                for name in _ENTITY_FIELDS:
                    value = getattr(event, name, None)
                    if value is not None:
                        return value
                return None
        return None if found is None else _copy(found)

    def owns(self, cmd: c.Command, author: uuid.UUID) -> bool:
        """Whether ``author`` wrote what ``cmd`` is about: for a comment's edit or delete, its
        author; for every other command True. (An unknown comment counts as owned: the command
        is then refused as not found, not as forbidden.)"""
        if isinstance(cmd, c.EditComment | c.DeleteComment):
            comment = self.comments.get(cmd.comment_id)
            return comment is None or comment.author_id == author
        return True

    # ------------------------------------------------------------------ writes

    def apply(self, cmd: c.Command, author: uuid.UUID | None = None, now_ms: int = 0) -> c.Event:
        """Apply one command by ``author`` at ``now_ms``; returns its event. Raises without
        changing anything."""
        match cmd:
            case c.UpdateBoard():
                return self._update_board(cmd)
            case c.CreateColumn():
                return self._create_column(cmd)
            case c.UpdateColumn():
                col = self._column(cmd.column_id)
                col.title = cmd.title
                self._touch("columns", col.id)
                return c.ColumnUpdated(column_id=col.id, title=col.title)
            case c.MoveColumn():
                return self._move_column(cmd)
            case c.DeleteColumn():
                return self._delete_column(cmd)
            case c.CreateCard():
                return self._create_card(cmd)
            case c.UpdateCard():
                return self._update_card(cmd)
            case c.MoveCard():
                return self._move_card(cmd)
            case c.DeleteCard():
                card = self._card(cmd.card_id)
                return c.CardDeleted(card_id=card.id, blob_keys=self._drop_card(card))
            case c.ReportWebhookDisabled():
                # Nothing of the board's rows changes: the event is the news.
                return c.WebhookDisabled(
                    webhook_id=cmd.webhook_id, host=cmd.host, reason=cmd.reason, failures=cmd.failures
                )
        event = self.apply_card_rule(cmd)
        if event is None:
            event = self.apply_part_rule(cmd, author or self.owner_id, now_ms)
        if event is None:
            raise BoardcastError(ErrorCode.UNKNOWN_TYPE, f"unknown command {type(cmd).__name__}")
        return event

    def take_batch(self, base_seq: int, epoch: int) -> Batch:
        """Final state of every row changed since the last call, as one Batch, fenced by the
        activation's ``epoch``."""
        batch = Batch(
            board_id=self.id,
            base_seq=base_seq,
            new_seq=self.seq,
            title=self.title,
            description=self.description,
            epoch=epoch,
            allow_wip_overflow=self.allow_wip_overflow,
        )
        live: dict[str, dict[uuid.UUID, Any]] = {
            "columns": self.columns,
            "cards": self.cards,
            "labels": self.labels,
            "fields": self.fields,
            "checklists": self.checklists,
            "items": self.items,
            "comments": self.comments,
            "attachments": self.attachments,
        }
        for table, dirty in self._dirty.items():
            if not dirty:
                continue
            rows, gone = getattr(batch, table), getattr(batch, f"deleted_{table}")
            current = live[table]
            for item_id in dirty:
                row = current.get(item_id)
                if row is None:
                    gone.append(item_id)
                else:
                    rows.append(row)
            dirty.clear()
        return batch

    # ------------------------------------------------------------------ board, columns, cards

    def _update_board(self, cmd: c.UpdateBoard) -> c.Event:
        if cmd.title is None and cmd.description is None:
            raise bad_request("nothing to update: give 'title' or 'description'")
        if cmd.title is not None:
            self.title = cmd.title
        if cmd.description is not None:
            self.description = cmd.description
        return c.BoardUpdated(title=cmd.title, description=cmd.description)

    def _create_column(self, cmd: c.CreateColumn) -> c.Event:
        self._check_neighbours(self.column_order, None, cmd.after, cmd.before, "column")
        col_id = uuid.uuid4()
        rank, moved = self.column_order.place(col_id, cmd.after, cmd.before)
        col = Column(id=col_id, title=cmd.title, rank=rank)
        self.columns[col_id] = col
        self.card_order[col_id] = RankedList()
        self.active[col_id] = 0
        self._touch("columns", col_id)
        return c.ColumnCreated(column=_copy(col), rebalanced=self._rerank(self.columns, "columns", moved))

    def _move_column(self, cmd: c.MoveColumn) -> c.Event:
        col = self._column(cmd.column_id)
        self._check_neighbours(self.column_order, col.id, cmd.after, cmd.before, "column")
        self.column_order.remove(col.id)
        col.rank, moved = self.column_order.place(col.id, cmd.after, cmd.before)
        self._touch("columns", col.id)
        return c.ColumnMoved(
            column_id=col.id, rank=col.rank, rebalanced=self._rerank(self.columns, "columns", moved)
        )

    def _delete_column(self, cmd: c.DeleteColumn) -> c.Event:
        col = self._column(cmd.column_id)
        card_ids = self.card_order[col.id].ids()
        if (cmd.move_to is not None) != (cmd.cards == "move"):
            raise bad_request("give 'move_to' exactly when 'cards' is 'move'")
        target: Column | None = None
        if cmd.cards == "move" and cmd.move_to is not None:
            if cmd.move_to == col.id:
                raise bad_request("cannot move the cards into the column being deleted")
            target = self._open_column(cmd.move_to)
            self._check_wip(target, self.active[col.id])
        if card_ids and cmd.cards == "refuse":
            raise conflict(
                f"the column holds {len(card_ids)} cards: say whether to move them to another "
                "column (cards: move, move_to) or delete them (cards: delete)",
                reason="column_not_empty",
                cards=len(card_ids),
            )
        event = c.ColumnDeleted(column_id=col.id)
        if target is not None:
            order = self.card_order[target.id]
            changed: dict[uuid.UUID, None] = {}
            for card_id in card_ids:
                card = self.cards[card_id]
                card.column_id = target.id
                card.rank, moved = order.place(card_id)
                self._touch("cards", card_id)
                for other, rank in moved:
                    self.cards[other].rank = rank
                    self._touch("cards", other)
                    changed[other] = None
                changed[card_id] = None
            self.active[target.id] += self.active[col.id]
            event.moved = [_copy(self.cards[i]) for i in changed]
        else:
            blob_keys: list[str] = []
            for card_id in card_ids:
                blob_keys += self._drop_card(self.cards[card_id])
            event.card_ids, event.blob_keys = card_ids, blob_keys
        del self.card_order[col.id], self.active[col.id]
        self.column_order.remove(col.id)
        del self.columns[col.id]
        self._touch("columns", col.id)
        return event

    def _create_card(self, cmd: c.CreateCard) -> c.Event:
        order = self.card_order.get(cmd.column_id)
        if order is None:
            raise not_found("column", cmd.column_id)
        col = self._open_column(cmd.column_id)
        self._check_neighbours(order, None, cmd.after, cmd.before, "card")
        self._check_wip(col, 1)
        card_id = uuid.uuid4()
        rank, moved = order.place(card_id, cmd.after, cmd.before)
        card = Card(
            id=card_id, column_id=cmd.column_id, title=cmd.title, description=cmd.description, rank=rank
        )
        self.cards[card_id] = card
        self.active[col.id] += 1
        self._touch("cards", card_id)
        return c.CardCreated(card=_copy(card), rebalanced=self._rerank(self.cards, "cards", moved))

    def _update_card(self, cmd: c.UpdateCard) -> c.Event:
        card = self._card(cmd.card_id)
        if cmd.title is None and cmd.description is None:
            raise bad_request("nothing to update: give 'title' or 'description'")
        if cmd.title is not None:
            card.title = cmd.title
        if cmd.description is not None:
            card.description = cmd.description
        self._touch("cards", card.id)
        return c.CardUpdated(card_id=card.id, title=cmd.title, description=cmd.description)

    def _move_card(self, cmd: c.MoveCard) -> c.Event:
        card = self._card(cmd.card_id)
        target = self.card_order.get(cmd.column_id)
        if target is None:
            raise not_found("column", cmd.column_id)
        col = self._open_column(cmd.column_id) if cmd.column_id != card.column_id else None
        self._check_neighbours(target, card.id, cmd.after, cmd.before, "card")
        if col is not None and not card.archived:
            self._check_wip(col, 1)
            self.active[card.column_id] -= 1
            self.active[col.id] += 1
        self.card_order[card.column_id].remove(card.id)
        card.column_id = cmd.column_id
        card.rank, moved = target.place(card.id, cmd.after, cmd.before)
        self._touch("cards", card.id)
        return c.CardMoved(
            card_id=card.id,
            column_id=card.column_id,
            rank=card.rank,
            rebalanced=self._rerank(self.cards, "cards", moved),
        )


def _orders(
    parents: dict[uuid.UUID, Any], children: list[tuple[uuid.UUID, uuid.UUID, int]]
) -> dict[uuid.UUID, RankedList]:
    """One RankedList per parent id (every parent gets one, empty if it has no children)."""
    grouped: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {p: [] for p in parents}
    for parent, child, rank in children:
        grouped.setdefault(parent, []).append((child, rank))
    return {p: RankedList(items) for p, items in grouped.items()}
