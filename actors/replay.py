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
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode
from protocol.model import BoardSnapshot, Card, Column

_copy = msgspec.structs.replace


class ReplayError(BoardcastError):
    """The log cannot be replayed onto the state (a gap, or an event about something that is
    not there): the log or a snapshot is damaged. Never a client's fault."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(ErrorCode.INTERNAL, message, {"seq": seq})


class ReplayState:
    """A board at one ``seq``, as replay holds it: items by id, ordered only when asked."""

    __slots__ = ("cards", "columns", "deleted", "description", "id", "seq", "title")

    def __init__(self, snap: BoardSnapshot) -> None:
        self.id = snap.id
        self.title = snap.title
        self.description = snap.description
        self.seq = snap.seq
        self.columns: dict[uuid.UUID, Column] = {col.id: _copy(col) for col in snap.columns}
        self.cards: dict[uuid.UUID, Card] = {card.id: _copy(card) for card in snap.cards}
        self.deleted = False

    @classmethod
    def origin(cls, board_id: uuid.UUID, title: str, description: str) -> ReplayState:
        """The board as it was created: seq 0, nothing in it."""
        return cls(
            BoardSnapshot(id=board_id, title=title, description=description, seq=0, columns=[], cards=[])
        )

    def snapshot(self) -> BoardSnapshot:
        """The same document the live board serves: columns by rank, cards column by column
        by rank (ranks are unique within a list, so the order is total)."""
        columns = sorted(self.columns.values(), key=_rank)
        by_column: dict[uuid.UUID, list[Card]] = {col.id: [] for col in columns}
        for card in self.cards.values():
            by_column[card.column_id].append(card)
        cards = [card for col in columns for card in sorted(by_column[col.id], key=_rank)]
        return BoardSnapshot(
            id=self.id,
            title=self.title,
            description=self.description,
            seq=self.seq,
            columns=[_copy(col) for col in columns],
            cards=[_copy(card) for card in cards],
        )

    def card(self, card_id: uuid.UUID) -> Card | None:
        found = self.cards.get(card_id)
        return None if found is None else _copy(found)

    def apply(self, seq: int, event: c.Event) -> set[uuid.UUID]:
        """Apply the event logged at ``seq`` (which must be the next one); returns the ids of
        the cards it changed."""
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


def _rank(item: Column | Card) -> int:
    return item.rank


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
    touched = set(st.cards)
    st.columns.clear()
    st.cards.clear()
    return touched


def _rerank_columns(st: ReplayState, changes: list[c.RankChange]) -> None:
    for ch in changes:
        st.columns[ch.id].rank = ch.rank


def _rerank_cards(st: ReplayState, changes: list[c.RankChange]) -> set[uuid.UUID]:
    for ch in changes:
        st.cards[ch.id].rank = ch.rank
    return {ch.id for ch in changes}


def _column_created(st: ReplayState, ev: c.ColumnCreated) -> set[uuid.UUID]:
    st.columns[ev.column.id] = _copy(ev.column)
    _rerank_columns(st, ev.rebalanced)
    return set()


def _column_updated(st: ReplayState, ev: c.ColumnUpdated) -> set[uuid.UUID]:
    st.columns[ev.column_id].title = ev.title
    return set()


def _column_moved(st: ReplayState, ev: c.ColumnMoved) -> set[uuid.UUID]:
    st.columns[ev.column_id].rank = ev.rank
    _rerank_columns(st, ev.rebalanced)
    return set()


def _column_deleted(st: ReplayState, ev: c.ColumnDeleted) -> set[uuid.UUID]:
    del st.columns[ev.column_id]
    # The event lists the cards that went with the column; any other card still pointing at
    # it would be a damaged log, and dropping it keeps the snapshot consistent.
    gone = set(ev.card_ids) | {i for i, card in st.cards.items() if card.column_id == ev.column_id}
    for card_id in gone:
        st.cards.pop(card_id, None)
    return gone


def _card_created(st: ReplayState, ev: c.CardCreated) -> set[uuid.UUID]:
    if ev.card.column_id not in st.columns:
        raise KeyError(str(ev.card.column_id))
    st.cards[ev.card.id] = _copy(ev.card)
    return {ev.card.id} | _rerank_cards(st, ev.rebalanced)


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
    return {card.id} | _rerank_cards(st, ev.rebalanced)


def _card_deleted(st: ReplayState, ev: c.CardDeleted) -> set[uuid.UUID]:
    del st.cards[ev.card_id]
    return {ev.card_id}


RULES: dict[type, Rule] = {
    c.BoardUpdated: _board_updated,
    c.BoardDeleted: _board_deleted,
    c.ColumnCreated: _column_created,
    c.ColumnUpdated: _column_updated,
    c.ColumnMoved: _column_moved,
    c.ColumnDeleted: _column_deleted,
    c.CardCreated: _card_created,
    c.CardUpdated: _card_updated,
    c.CardMoved: _card_moved,
    c.CardDeleted: _card_deleted,
}
"""One rule per event type: how it changes a board, and which cards it touched."""
