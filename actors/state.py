"""A board's ordered state and the pure rules that turn commands into events.

No I/O: the board actor owns one ``BoardState``, applies commands to it, and persists what
``dirty`` says changed. A rejected command raises :class:`BoardcastError` and leaves the
state untouched (every check happens before the first mutation).
"""

from __future__ import annotations

import uuid

import msgspec

from actors.ranks import RankedList
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import BoardSnapshot, Card, Column
from storage import Batch, LoadedBoard


class BoardState:
    def __init__(self, loaded: LoadedBoard) -> None:
        self.id = loaded.id
        self.title = loaded.title
        self.description = loaded.description
        self.owner_id = loaded.owner_id
        self.seq = loaded.seq
        self.columns: dict[uuid.UUID, Column] = {col.id: col for col in loaded.columns}
        self.cards: dict[uuid.UUID, Card] = {card.id: card for card in loaded.cards}
        self.column_order = RankedList([(col.id, col.rank) for col in loaded.columns])
        self.card_order: dict[uuid.UUID, RankedList] = {col.id: RankedList() for col in loaded.columns}
        by_column: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
        for card in loaded.cards:
            by_column.setdefault(card.column_id, []).append((card.id, card.rank))
        for col_id, items in by_column.items():
            self.card_order[col_id] = RankedList(items)
        self._dirty_columns: set[uuid.UUID] = set()
        self._dirty_cards: set[uuid.UUID] = set()

    # ------------------------------------------------------------------ reads

    def snapshot(self) -> BoardSnapshot:
        columns = [self.columns[i] for i in self.column_order.ids()]
        cards = [self.cards[i] for col in columns for i in self.card_order[col.id].ids()]
        return BoardSnapshot(
            id=self.id,
            title=self.title,
            description=self.description,
            seq=self.seq,
            columns=columns,
            cards=cards,
        )

    def entity_after(self, event: c.Event) -> Column | Card | None:
        """A copy of the column or card an event is about, as it is now (None if gone)."""
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
        return None if found is None else msgspec.structs.replace(found)

    # ------------------------------------------------------------------ writes

    def apply(self, cmd: c.Command) -> c.Event:
        """Apply one command; returns its event. Raises without changing anything."""
        match cmd:
            case c.UpdateBoard():
                return self._update_board(cmd)
            case c.CreateColumn():
                return self._create_column(cmd)
            case c.UpdateColumn():
                col = self._column(cmd.column_id)
                col.title = cmd.title
                self._dirty_columns.add(col.id)
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
                self.card_order[card.column_id].remove(card.id)
                del self.cards[card.id]
                self._dirty_cards.add(card.id)
                return c.CardDeleted(card_id=card.id)
            case c.ReportWebhookDisabled():
                # Nothing of the board's rows changes: the event is the news.
                return c.WebhookDisabled(
                    webhook_id=cmd.webhook_id, host=cmd.host, reason=cmd.reason, failures=cmd.failures
                )
        raise BoardcastError(ErrorCode.UNKNOWN_TYPE, f"unknown command {type(cmd).__name__}")

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
        )
        for col_id in self._dirty_columns:
            col = self.columns.get(col_id)
            if col is None:
                batch.deleted_columns.append(col_id)
            else:
                batch.columns.append(col)
        for card_id in self._dirty_cards:
            card = self.cards.get(card_id)
            if card is None:
                batch.deleted_cards.append(card_id)
            else:
                batch.cards.append(card)
        self._dirty_columns.clear()
        self._dirty_cards.clear()
        return batch

    # ------------------------------------------------------------------ helpers

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
                known = self.cards if kind == "card" else self.columns
                if ref in known:
                    raise bad_request(f"neighbour {kind} is in another column", neighbour=str(ref))
                raise not_found(kind, ref)

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
        self._dirty_columns.add(col_id)
        return c.ColumnCreated(column=msgspec.structs.replace(col), rebalanced=self._rerank_columns(moved))

    def _move_column(self, cmd: c.MoveColumn) -> c.Event:
        col = self._column(cmd.column_id)
        self._check_neighbours(self.column_order, col.id, cmd.after, cmd.before, "column")
        self.column_order.remove(col.id)
        col.rank, moved = self.column_order.place(col.id, cmd.after, cmd.before)
        self._dirty_columns.add(col.id)
        return c.ColumnMoved(column_id=col.id, rank=col.rank, rebalanced=self._rerank_columns(moved))

    def _delete_column(self, cmd: c.DeleteColumn) -> c.Event:
        col = self._column(cmd.column_id)
        card_ids = self.card_order.pop(col.id).ids()
        for card_id in card_ids:
            del self.cards[card_id]
            self._dirty_cards.add(card_id)
        self.column_order.remove(col.id)
        del self.columns[col.id]
        self._dirty_columns.add(col.id)
        return c.ColumnDeleted(column_id=col.id, card_ids=card_ids)

    def _create_card(self, cmd: c.CreateCard) -> c.Event:
        order = self.card_order.get(cmd.column_id)
        if order is None:
            raise not_found("column", cmd.column_id)
        self._check_neighbours(order, None, cmd.after, cmd.before, "card")
        card_id = uuid.uuid4()
        rank, moved = order.place(card_id, cmd.after, cmd.before)
        card = Card(
            id=card_id, column_id=cmd.column_id, title=cmd.title, description=cmd.description, rank=rank
        )
        self.cards[card_id] = card
        self._dirty_cards.add(card_id)
        return c.CardCreated(card=msgspec.structs.replace(card), rebalanced=self._rerank_cards(moved))

    def _update_card(self, cmd: c.UpdateCard) -> c.Event:
        card = self._card(cmd.card_id)
        if cmd.title is None and cmd.description is None:
            raise bad_request("nothing to update: give 'title' or 'description'")
        if cmd.title is not None:
            card.title = cmd.title
        if cmd.description is not None:
            card.description = cmd.description
        self._dirty_cards.add(card.id)
        return c.CardUpdated(card_id=card.id, title=cmd.title, description=cmd.description)

    def _move_card(self, cmd: c.MoveCard) -> c.Event:
        card = self._card(cmd.card_id)
        target = self.card_order.get(cmd.column_id)
        if target is None:
            raise not_found("column", cmd.column_id)
        self._check_neighbours(target, card.id, cmd.after, cmd.before, "card")
        self.card_order[card.column_id].remove(card.id)
        card.column_id = cmd.column_id
        card.rank, moved = target.place(card.id, cmd.after, cmd.before)
        self._dirty_cards.add(card.id)
        return c.CardMoved(
            card_id=card.id, column_id=card.column_id, rank=card.rank, rebalanced=self._rerank_cards(moved)
        )

    def _rerank_columns(self, moved: list[tuple[uuid.UUID, int]]) -> list[c.RankChange]:
        for col_id, rank in moved:
            self.columns[col_id].rank = rank
            self._dirty_columns.add(col_id)
        return [c.RankChange(i, r) for i, r in moved]

    def _rerank_cards(self, moved: list[tuple[uuid.UUID, int]]) -> list[c.RankChange]:
        for card_id, rank in moved:
            self.cards[card_id].rank = rank
            self._dirty_cards.add(card_id)
        return [c.RankChange(i, r) for i, r in moved]
