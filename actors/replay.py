"""Replay: a board rebuilt from its event log, one event at a time. Pure, no I/O.

Time travel, a card's history and the history snapshots are all this: start from a stored
snapshot (or the board's origin at seq 0), apply the logged events after it in ``seq`` order.
The events are what clients saw, so the rules here must reproduce exactly what
``actors.state.BoardState`` did when it produced each event: partial updates change only the
fields they carry, moves and creations carry the final rank of the item and of every item a
rebalance moved.

Every event type of :data:`protocol.commands.Event` has one rule in :data:`RULES` (a test
fails if one is missing). A rule mutates the state and returns the ids of the cards whose
state it changed, which is what the per-card history index records.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from protocol import commands as c
from protocol.base import RankChange
from protocol.errors import BoardcastError, ErrorCode
from protocol.model import (
    Attachment,
    BoardSnapshot,
    Card,
    Checklist,
    ChecklistItem,
    Column,
    Comment,
    CustomField,
    Label,
)

_copy = msgspec.structs.replace


class ReplayError(BoardcastError):
    """The log cannot be replayed onto the state (a gap, or an event about something that is
    not there): the log or a snapshot is damaged. Never a client's fault."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(ErrorCode.INTERNAL, message, {"seq": seq})


class ReplayState:
    """A board at one ``seq``, as replay holds it: items by id, ordered only when asked.
    Comments and attachments keep the order they were created in (dicts keep insertion
    order), as the live board does."""

    __slots__ = (
        "allow_wip_overflow",
        "attachments",
        "cards",
        "checklists",
        "columns",
        "comments",
        "deleted",
        "description",
        "fields",
        "id",
        "items",
        "labels",
        "seq",
        "title",
    )

    def __init__(self, snap: BoardSnapshot) -> None:
        self.id = snap.id
        self.title = snap.title
        self.description = snap.description
        self.seq = snap.seq
        self.allow_wip_overflow = snap.allow_wip_overflow
        self.columns: dict[uuid.UUID, Column] = {x.id: _copy(x) for x in snap.columns}
        self.cards: dict[uuid.UUID, Card] = {x.id: _copy(x) for x in snap.cards}
        self.labels: dict[uuid.UUID, Label] = {x.id: _copy(x) for x in snap.labels}
        self.fields: dict[uuid.UUID, CustomField] = {x.id: _copy(x) for x in snap.fields}
        self.checklists: dict[uuid.UUID, Checklist] = {x.id: _copy(x) for x in snap.checklists}
        self.items: dict[uuid.UUID, ChecklistItem] = {x.id: _copy(x) for x in snap.items}
        self.comments: dict[uuid.UUID, Comment] = {x.id: _copy(x) for x in snap.comments}
        self.attachments: dict[uuid.UUID, Attachment] = {x.id: _copy(x) for x in snap.attachments}
        self.deleted = False

    @classmethod
    def origin(cls, board_id: uuid.UUID, title: str, description: str) -> ReplayState:
        """The board as it was created: seq 0, nothing in it."""
        return cls(
            BoardSnapshot(id=board_id, title=title, description=description, seq=0, columns=[], cards=[])
        )

    def snapshot(self) -> BoardSnapshot:
        """The same document the live board serves: columns by rank, cards column by column
        by rank (ranks are unique within a list, so the order is total), labels by name,
        fields by rank, checklists card by card and items checklist by checklist by rank."""
        columns = sorted(self.columns.values(), key=_rank)
        cards = _grouped(self.cards.values(), columns, "column_id")
        checklists = _grouped(self.checklists.values(), cards, "card_id")
        items = _grouped(self.items.values(), checklists, "checklist_id")
        return BoardSnapshot(
            id=self.id,
            title=self.title,
            description=self.description,
            seq=self.seq,
            columns=[_copy(x) for x in columns],
            cards=[_copy(x) for x in cards],
            allow_wip_overflow=self.allow_wip_overflow,
            labels=[_copy(x) for x in sorted(self.labels.values(), key=lambda lb: (lb.name, str(lb.id)))],
            fields=[_copy(x) for x in sorted(self.fields.values(), key=_rank)],
            checklists=[_copy(x) for x in checklists],
            items=[_copy(x) for x in items],
            comments=[_copy(x) for x in self.comments.values()],
            attachments=[_copy(x) for x in self.attachments.values()],
        )

    def card(self, card_id: uuid.UUID) -> Card | None:
        found = self.cards.get(card_id)
        return None if found is None else _copy(found)

    def card_parts(self, card_id: uuid.UUID) -> CardParts:
        """What hangs off one card: checklists and items by rank, comments and attachments
        oldest first."""
        checklists = sorted((x for x in self.checklists.values() if x.card_id == card_id), key=_rank)
        items = _grouped((x for x in self.items.values() if x.card_id == card_id), checklists, "checklist_id")
        return CardParts(
            checklists=[_copy(x) for x in checklists],
            items=[_copy(x) for x in items],
            comments=[_copy(x) for x in self.comments.values() if x.card_id == card_id],
            attachments=[_copy(x) for x in self.attachments.values() if x.card_id == card_id],
        )

    def apply(self, seq: int, event: c.Event) -> set[uuid.UUID]:
        """Apply the event logged at ``seq`` (which must be the next one); returns the ids of
        the cards it changed (their own fields, or what hangs off them)."""
        if seq != self.seq + 1:
            raise ReplayError(f"replay at seq {self.seq} cannot apply the event at seq {seq}", seq)
        rule = RULES.get(type(event))
        if rule is None:
            raise ReplayError(f"no replay rule for {type(event).__name__}", seq)
        try:
            touched = rule(self, event)
        except KeyError as e:
            raise ReplayError(
                f"{type(event).__name__} at seq {seq} names {e} which is not on the board", seq
            ) from e
        self.seq = seq
        return touched

    def apply_all(self, events: Iterable[tuple[int, c.Event]]) -> None:
        for seq, event in events:
            self.apply(seq, event)

    def drop_cards(self, card_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Remove cards and everything that hangs off them (as the database cascades)."""
        gone = set(card_ids)
        for card_id in gone:
            self.cards.pop(card_id, None)
        for table in (self.checklists, self.items, self.comments, self.attachments):
            for key in [k for k, v in table.items() if v.card_id in gone]:
                del table[key]
        return gone


class CardParts(msgspec.Struct, kw_only=True):
    checklists: list[Checklist]
    items: list[ChecklistItem]
    comments: list[Comment]
    attachments: list[Attachment]


class _Ranked(Protocol):
    @property
    def rank(self) -> int: ...


def _rank(item: _Ranked) -> int:
    return item.rank


T = TypeVar("T", Card, Checklist, ChecklistItem)


def _grouped(items: Iterable[T], parents: Sequence[Any], key: str) -> list[T]:
    """``items`` grouped by their parent (``key`` names the parent's id), in the parents'
    order, each group by rank; items of no listed parent are left out."""
    groups: dict[uuid.UUID, list[T]] = {p.id: [] for p in parents}
    for item in items:
        group = groups.get(getattr(item, key))
        if group is not None:
            group.append(item)
    return [item for p in parents for item in sorted(groups[p.id], key=_rank)]


# ------------------------------------------------------------------ the rules

Rule = Callable[[ReplayState, Any], set[uuid.UUID]]


def _board_updated(st: ReplayState, ev: c.BoardUpdated) -> set[uuid.UUID]:
    if ev.title is not None:
        st.title = ev.title
    if ev.description is not None:
        st.description = ev.description
    return set()


def _board_deleted(st: ReplayState, ev: c.BoardDeleted) -> set[uuid.UUID]:
    st.deleted = True
    touched = st.drop_cards(list(st.cards))
    st.columns.clear()
    st.labels.clear()
    st.fields.clear()
    return touched


def _board_configured(st: ReplayState, ev: c.BoardConfigured) -> set[uuid.UUID]:
    st.allow_wip_overflow = ev.allow_wip_overflow
    return set()


def _rerank(table: dict[uuid.UUID, Any], changes: list[RankChange]) -> set[uuid.UUID]:
    for ch in changes:
        table[ch.id].rank = ch.rank
    return {ch.id for ch in changes}


def _column_created(st: ReplayState, ev: c.ColumnCreated) -> set[uuid.UUID]:
    st.columns[ev.column.id] = _copy(ev.column)
    _rerank(st.columns, ev.rebalanced)
    return set()


def _column_updated(st: ReplayState, ev: c.ColumnUpdated) -> set[uuid.UUID]:
    st.columns[ev.column_id].title = ev.title
    return set()


def _column_moved(st: ReplayState, ev: c.ColumnMoved) -> set[uuid.UUID]:
    st.columns[ev.column_id].rank = ev.rank
    _rerank(st.columns, ev.rebalanced)
    return set()


def _column_replaced(st: ReplayState, ev: Any) -> set[uuid.UUID]:
    """An event carrying the column complete (configured, archived, restored)."""
    if ev.column.id not in st.columns:
        raise KeyError(str(ev.column.id))
    st.columns[ev.column.id] = _copy(ev.column)
    return set()


def _column_deleted(st: ReplayState, ev: c.ColumnDeleted) -> set[uuid.UUID]:
    del st.columns[ev.column_id]
    moved = _put_cards(st, ev.moved)
    # The event lists the cards that went with the column; any other card still pointing at
    # it would be a damaged log, and dropping it keeps the snapshot consistent.
    doomed = set(ev.card_ids) | {i for i, card in st.cards.items() if card.column_id == ev.column_id}
    return moved | st.drop_cards(doomed)


def _put_cards(st: ReplayState, cards: list[Card]) -> set[uuid.UUID]:
    for card in cards:
        if card.column_id not in st.columns:
            raise KeyError(str(card.column_id))
        st.cards[card.id] = _copy(card)
    return {card.id for card in cards}


def _card_created(st: ReplayState, ev: c.CardCreated) -> set[uuid.UUID]:
    return _put_cards(st, [ev.card]) | _rerank(st.cards, ev.rebalanced)


def _card_replaced(st: ReplayState, ev: Any) -> set[uuid.UUID]:
    """An event carrying one card complete (scheduled, assigned, archived, labelled...)."""
    if ev.card.id not in st.cards:
        raise KeyError(str(ev.card.id))
    return _put_cards(st, [ev.card])


def _card_updated(st: ReplayState, ev: c.CardUpdated) -> set[uuid.UUID]:
    card = st.cards[ev.card_id]
    if ev.title is not None:
        card.title = ev.title
    if ev.description is not None:
        card.description = ev.description
    return {card.id}


def _card_moved(st: ReplayState, ev: c.CardMoved) -> set[uuid.UUID]:
    card = st.cards[ev.card_id]
    if ev.column_id not in st.columns:
        raise KeyError(str(ev.column_id))
    card.column_id = ev.column_id
    card.rank = ev.rank
    return {card.id} | _rerank(st.cards, ev.rebalanced)


def _card_deleted(st: ReplayState, ev: c.CardDeleted) -> set[uuid.UUID]:
    if ev.card_id not in st.cards:
        raise KeyError(str(ev.card_id))
    return st.drop_cards([ev.card_id])


def _label_put(st: ReplayState, ev: c.LabelCreated | c.LabelUpdated) -> set[uuid.UUID]:
    st.labels[ev.label.id] = _copy(ev.label)
    return set()


def _label_deleted(st: ReplayState, ev: c.LabelDeleted) -> set[uuid.UUID]:
    del st.labels[ev.label_id]
    return _put_cards(st, ev.cards)


def _field_put(st: ReplayState, ev: c.FieldCreated | c.FieldUpdated) -> set[uuid.UUID]:
    st.fields[ev.field.id] = _copy(ev.field)
    return _put_cards(st, ev.cards) if isinstance(ev, c.FieldUpdated) else set()


def _field_deleted(st: ReplayState, ev: c.FieldDeleted) -> set[uuid.UUID]:
    del st.fields[ev.field_id]
    return _put_cards(st, ev.cards)


def _checklist_put(st: ReplayState, ev: Any) -> set[uuid.UUID]:
    cl: Checklist = ev.checklist
    if cl.card_id not in st.cards:
        raise KeyError(str(cl.card_id))
    st.checklists[cl.id] = _copy(cl)
    _rerank(st.checklists, getattr(ev, "rebalanced", []))
    return {cl.card_id}


def _checklist_deleted(st: ReplayState, ev: c.ChecklistDeleted) -> set[uuid.UUID]:
    cl = st.checklists.pop(ev.checklist_id)
    doomed = set(ev.item_ids) | {i for i, item in st.items.items() if item.checklist_id == cl.id}
    for item_id in doomed:
        st.items.pop(item_id, None)
    return {cl.card_id}


def _item_put(st: ReplayState, ev: Any) -> set[uuid.UUID]:
    item: ChecklistItem = ev.item
    if item.checklist_id not in st.checklists:
        raise KeyError(str(item.checklist_id))
    before = st.items.get(item.id)
    st.items[item.id] = _copy(item)
    _rerank(st.items, getattr(ev, "rebalanced", []))
    # A move between checklists of two cards changes both cards.
    return {item.card_id} | ({before.card_id} if before is not None else set())


def _item_deleted(st: ReplayState, ev: c.ItemDeleted) -> set[uuid.UUID]:
    return {st.items.pop(ev.item_id).card_id}


def _comment_put(st: ReplayState, ev: c.CommentCreated | c.CommentEdited) -> set[uuid.UUID]:
    if ev.comment.card_id not in st.cards:
        raise KeyError(str(ev.comment.card_id))
    st.comments[ev.comment.id] = _copy(ev.comment)
    return {ev.comment.card_id}


def _comment_deleted(st: ReplayState, ev: c.CommentDeleted) -> set[uuid.UUID]:
    del st.comments[ev.comment_id]
    return {ev.card_id}


def _attachment_added(st: ReplayState, ev: c.AttachmentAdded) -> set[uuid.UUID]:
    if ev.attachment.card_id not in st.cards:
        raise KeyError(str(ev.attachment.card_id))
    st.attachments[ev.attachment.id] = _copy(ev.attachment)
    return {ev.attachment.card_id}


def _attachment_deleted(st: ReplayState, ev: c.AttachmentDeleted) -> set[uuid.UUID]:
    del st.attachments[ev.attachment_id]
    if ev.card is not None:
        _put_cards(st, [ev.card])
    return {ev.card_id}


def _notice(st: ReplayState, ev: Any) -> set[uuid.UUID]:
    """An event that tells viewers something and changes nothing on the board (a webhook
    was disabled): it is in the log and the feed, and the board stays as it was."""
    return set()


RULES: dict[type, Rule] = {
    c.BoardUpdated: _board_updated,
    c.BoardDeleted: _board_deleted,
    c.BoardConfigured: _board_configured,
    c.ColumnCreated: _column_created,
    c.ColumnUpdated: _column_updated,
    c.ColumnMoved: _column_moved,
    c.ColumnConfigured: _column_replaced,
    c.ColumnArchived: _column_replaced,
    c.ColumnRestored: _column_replaced,
    c.ColumnDeleted: _column_deleted,
    c.CardCreated: _card_created,
    c.CardUpdated: _card_updated,
    c.CardMoved: _card_moved,
    c.CardDeleted: _card_deleted,
    c.CardScheduled: _card_replaced,
    c.CardAssigned: _card_replaced,
    c.CardUnassigned: _card_replaced,
    c.CoverSet: _card_replaced,
    c.CardArchived: _card_replaced,
    c.CardRestored: _card_replaced,
    c.LabelCreated: _label_put,
    c.LabelUpdated: _label_put,
    c.LabelDeleted: _label_deleted,
    c.LabelAdded: _card_replaced,
    c.LabelRemoved: _card_replaced,
    c.FieldCreated: _field_put,
    c.FieldUpdated: _field_put,
    c.FieldDeleted: _field_deleted,
    c.FieldValueSet: _card_replaced,
    c.ChecklistCreated: _checklist_put,
    c.ChecklistRenamed: _checklist_put,
    c.ChecklistMoved: _checklist_put,
    c.ChecklistDeleted: _checklist_deleted,
    c.ItemCreated: _item_put,
    c.ItemUpdated: _item_put,
    c.ItemMoved: _item_put,
    c.ItemDeleted: _item_deleted,
    c.CommentCreated: _comment_put,
    c.CommentEdited: _comment_put,
    c.CommentDeleted: _comment_deleted,
    c.AttachmentAdded: _attachment_added,
    c.AttachmentDeleted: _attachment_deleted,
    c.WebhookDisabled: _notice,
}
"""One rule per event type: how it changes a board, and which cards it touched."""
