"""Ranks (actors/ranks.py) as properties, and the pure board rules (actors/state.py): each
command's event, and refusals that change nothing."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.ranks import RANK_MAX, RankedList
from actors.state import BoardState
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode
from protocol.model import Card, Column
from storage import LoadedBoard

# ------------------------------------------------------------------ ranks: a checked model


class Checked:
    """A RankedList driven next to a plain list holding the intended order; every step checks
    order, bounds and what a rebalance reports."""

    def __init__(self, items: list[tuple[uuid.UUID, int]] | None = None) -> None:
        self.rl = RankedList(items)
        self.model = [i for i, _ in sorted(items or [], key=lambda p: p[1])]
        self.rebalances = 0
        self.check()

    def check(self) -> None:
        items = self.rl.items()
        assert [i for i, _ in items] == self.model
        ranks = [r for _, r in items]
        assert all(0 < r <= RANK_MAX for r in ranks), ranks
        assert all(a < b for a, b in itertools.pairwise(ranks)), "ranks not strictly increasing"
        assert len(self.rl) == len(self.model)

    def place(self, item: uuid.UUID, after: uuid.UUID | None = None, before: uuid.UUID | None = None) -> int:
        old = dict(self.rl.items())
        rank, changed = self.rl.place(item, after, before)
        if after is not None:
            self.model.insert(self.model.index(after) + 1, item)
        elif before is not None:
            self.model.insert(self.model.index(before), item)
        else:
            self.model.append(item)
        self.check()
        now = dict(self.rl.items())
        assert now[item] == rank
        assert item not in dict(changed)
        # `changed` is exactly what a viewer needs: every other item whose rank moved, at its
        # new rank; without a rebalance, nothing else moved
        moved = {i for i in old if old[i] != now[i]}
        assert moved <= {i for i, _ in changed}
        assert all(now[i] == r for i, r in changed)
        if changed:
            self.rebalances += 1
        else:
            assert not moved
        return rank

    def remove(self, item: uuid.UUID) -> None:
        self.rl.remove(item)
        self.model.remove(item)
        assert item not in self.rl
        self.check()

    def move(self, item: uuid.UUID, after: uuid.UUID | None = None, before: uuid.UUID | None = None) -> None:
        self.remove(item)
        self.place(item, after, before)


def new() -> uuid.UUID:
    return uuid.uuid4()


def test_seventy_inserts_right_after_the_same_item_exhaust_the_gap_and_rebalance():
    lst = Checked()
    anchor = new()
    lst.place(anchor)
    lst.place(new())  # a right neighbour, so every insert halves the gap next to the anchor
    for _ in range(70):
        lst.place(new(), after=anchor)
    assert lst.rebalances >= 1
    # newest first right after the anchor
    assert lst.model[0] == anchor and len(lst.model) == 72


def test_inserts_always_before_the_same_item_rebalance_and_keep_order():
    lst = Checked()
    first, target = new(), new()
    lst.place(first)
    lst.place(target)
    for _ in range(150):
        lst.place(new(), before=target)
    assert lst.rebalances >= 2
    assert lst.model[0] == first and lst.model[-1] == target


def test_inserts_always_before_the_first_item_keep_order():
    lst = Checked()
    for _ in range(300):
        lst.place(new(), before=lst.model[0] if lst.model else None)
    assert len(lst.model) == 300


def test_appends_keep_order_without_rebalancing():
    lst = Checked()
    for _ in range(500):
        lst.place(new())
    assert lst.rebalances == 0


def test_appending_at_the_top_of_the_space_rebalances():
    top = new()
    lst = Checked([(top, RANK_MAX - 1)])
    lst.place(new())  # lands on RANK_MAX: the last free rank
    lst.place(new())  # no room left: rebalance
    assert lst.rebalances == 1


def test_prepending_at_the_bottom_of_the_space_rebalances():
    low = new()
    lst = Checked([(low, 1)])
    lst.place(new(), before=low)
    assert lst.rebalances == 1


def test_inserting_between_touching_neighbours_rebalances():
    a, b = new(), new()
    lst = Checked([(a, 1000), (b, 1001)])
    lst.place(new(), after=a)
    assert lst.rebalances == 1


def test_unknown_neighbour_is_a_key_error_and_changes_nothing():
    lst = Checked()
    lst.place(new())
    before = lst.rl.items()
    with pytest.raises(KeyError):
        lst.rl.place(new(), after=new())
    assert lst.rl.items() == before


# An operation: (kind, a, b, count); a and b pick existing items by index modulo the length.
OPS = st.tuples(
    st.sampled_from(["append", "after", "before", "burst_after", "burst_before", "remove", "move"]),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(1, 80),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=40))
def test_any_mix_of_inserts_removes_and_moves_keeps_the_intended_order(ops):
    lst = Checked()
    for kind, a, b, count in ops:
        ids = lst.model
        if not ids or kind == "append":
            lst.place(new())
        elif kind == "after":
            lst.place(new(), after=ids[a % len(ids)])
        elif kind == "before":
            lst.place(new(), before=ids[a % len(ids)])
        elif kind == "burst_after":
            # a run of inserts at the same spot: always right after the same item
            anchor = ids[a % len(ids)]
            for _ in range(count):
                lst.place(new(), after=anchor)
        elif kind == "burst_before":
            anchor = ids[a % len(ids)]
            for _ in range(count):
                lst.place(new(), before=anchor)
        elif kind == "remove":
            lst.remove(ids[a % len(ids)])
        else:
            item = ids[a % len(ids)]
            if len(ids) == 1:
                lst.move(item)
                continue
            others = [i for i in ids if i != item]
            ref = others[b % len(others)]
            if b % 3 == 0:
                lst.move(item, after=ref)
            elif b % 3 == 1:
                lst.move(item, before=ref)
            else:
                lst.move(item)


@settings(max_examples=50, deadline=None)
@given(st.integers(33, 120), st.integers(0, 5))
def test_any_long_run_after_one_item_rebalances(n, extra):
    lst = Checked()
    anchor = new()
    for _ in range(extra + 1):
        lst.place(new())
    lst.place(anchor, before=lst.model[0])
    for _ in range(n):
        lst.place(new(), after=anchor)
    assert lst.rebalances >= 1


# ------------------------------------------------------------------ BoardState.apply


def loaded(columns: int = 2, cards_per_column: int = 2) -> LoadedBoard:
    cols = [Column(id=uuid.uuid4(), title=f"col{i}", rank=(i + 1) * 1000) for i in range(columns)]
    cards = [
        Card(
            id=uuid.uuid4(), column_id=col.id, title=f"{col.title}-card{j}", description="", rank=(j + 1) * 10
        )
        for col in cols
        for j in range(cards_per_column)
    ]
    return LoadedBoard(
        id=uuid.uuid4(),
        title="Board",
        description="",
        owner_id=uuid.uuid4(),
        seq=7,
        epoch=1,
        columns=cols,
        cards=cards,
        recent_requests=[],
    )


def frozen(state: BoardState) -> bytes:
    """The whole observable state as bytes (snapshots share the live objects)."""
    return msgspec.json.encode(state.snapshot())


def titles(state: BoardState) -> dict[str, list[str]]:
    snap = state.snapshot()
    by_col = {col.id: col.title for col in snap.columns}
    out: dict[str, list[str]] = {col.title: [] for col in snap.columns}
    for card in snap.cards:
        out[by_col[card.column_id]].append(card.title)
    return out


def test_loading_orders_columns_and_cards_by_rank():
    lb = loaded()
    lb.columns.reverse()
    lb.cards.reverse()
    state = BoardState(lb)
    assert titles(state) == {"col0": ["col0-card0", "col0-card1"], "col1": ["col1-card0", "col1-card1"]}
    assert state.seq == 7


def test_every_command_gives_its_event():
    state = BoardState(loaded())
    state.take_batch(7, 0)
    col0, col1 = state.snapshot().columns
    c00, c01, c10, _ = state.snapshot().cards

    ev = state.apply(c.UpdateBoard(title="New"))
    assert ev == c.BoardUpdated(title="New") and state.title == "New"
    ev = state.apply(c.UpdateBoard(description="D"))
    assert ev == c.BoardUpdated(description="D") and (state.title, state.description) == ("New", "D")

    ev = state.apply(c.CreateColumn(title="First", before=col0.id))
    assert isinstance(ev, c.ColumnCreated) and ev.column.title == "First" and ev.rebalanced == []
    first = ev.column
    assert first.rank < col0.rank and state.columns[first.id] == first
    assert [col.title for col in state.snapshot().columns] == ["First", "col0", "col1"]

    assert state.apply(c.UpdateColumn(column_id=first.id, title="Renamed")) == c.ColumnUpdated(
        column_id=first.id, title="Renamed"
    )
    ev = state.apply(c.MoveColumn(column_id=first.id))
    assert isinstance(ev, c.ColumnMoved) and ev.column_id == first.id and ev.rank > col1.rank
    assert [col.title for col in state.snapshot().columns] == ["col0", "col1", "Renamed"]
    ev = state.apply(c.MoveColumn(column_id=first.id, after=col0.id))
    assert col0.rank < ev.rank < col1.rank

    ev = state.apply(c.CreateCard(column_id=col0.id, title="New card", description="d", after=c00.id))
    assert isinstance(ev, c.CardCreated)
    assert (ev.card.column_id, ev.card.title, ev.card.description) == (col0.id, "New card", "d")
    assert titles(state)["col0"] == ["col0-card0", "New card", "col0-card1"]
    new_card = ev.card.id

    assert state.apply(c.UpdateCard(card_id=new_card, title="T")) == c.CardUpdated(
        card_id=new_card, title="T"
    )
    assert state.apply(c.UpdateCard(card_id=new_card, description="x")) == c.CardUpdated(
        card_id=new_card, description="x"
    )
    assert state.cards[new_card].title == "T" and state.cards[new_card].description == "x"

    ev = state.apply(c.MoveCard(card_id=c01.id, column_id=col1.id, before=c10.id))
    assert isinstance(ev, c.CardMoved) and ev.column_id == col1.id and ev.card_id == c01.id
    assert titles(state)["col1"] == ["col0-card1", "col1-card0", "col1-card1"]
    assert state.cards[c01.id].column_id == col1.id and state.cards[c01.id].rank == ev.rank
    ev = state.apply(c.MoveCard(card_id=c00.id, column_id=col0.id))  # to the end of its own column
    assert titles(state)["col0"] == ["T", "col0-card0"]

    assert state.apply(c.DeleteCard(card_id=new_card)) == c.CardDeleted(card_id=new_card)
    assert new_card not in state.cards

    cards_in_col1 = [k.id for k in state.snapshot().cards if k.column_id == col1.id]
    with pytest.raises(BoardcastError) as refused:  # it holds cards: the request must say what of them
        state.apply(c.DeleteColumn(column_id=col1.id))
    assert refused.value.code == ErrorCode.CONFLICT
    ev = state.apply(c.DeleteColumn(column_id=col1.id, cards="delete"))
    assert ev == c.ColumnDeleted(column_id=col1.id, card_ids=cards_in_col1)
    assert col1.id not in state.columns and col1.id not in state.card_order
    assert not any(k.column_id == col1.id for k in state.cards.values())

    # apply never assigns seq: the actor does, once the command is accepted
    assert state.seq == 7
    batch = state.take_batch(7, 0)
    assert set(batch.deleted_columns) == {col1.id}
    assert set(batch.deleted_cards) == {new_card, *cards_in_col1}
    assert {col.id for col in batch.columns} == {first.id}
    assert {k.id for k in batch.cards} == {c00.id}
    assert (batch.title, batch.description) == ("New", "D")


def test_events_do_not_alias_live_state():
    state = BoardState(loaded())
    ev = state.apply(c.CreateColumn(title="A"))
    assert isinstance(ev, c.ColumnCreated)
    state.apply(c.UpdateColumn(column_id=ev.column.id, title="B"))
    assert ev.column.title == "A"


def test_a_rebalance_travels_in_the_event_and_the_batch():
    lb = loaded(columns=2, cards_per_column=0)
    lb.columns[0].rank, lb.columns[1].rank = 10, 11  # touching: no room between them
    state = BoardState(lb)
    state.take_batch(7, 0)
    first, second = state.snapshot().columns
    ev = state.apply(c.CreateColumn(title="Between", after=first.id))
    assert isinstance(ev, c.ColumnCreated)
    assert {rc.id for rc in ev.rebalanced} == {first.id, second.id}
    assert all(state.columns[rc.id].rank == rc.rank for rc in ev.rebalanced)
    assert [col.title for col in state.snapshot().columns] == ["col0", "Between", "col1"]
    assert {col.id for col in state.take_batch(7, 0).columns} == {first.id, second.id, ev.column.id}


def _bad_commands(state: BoardState) -> list[tuple[c.Command, ErrorCode]]:
    col0, col1 = state.snapshot().columns
    c00, c01, c10, _ = state.snapshot().cards
    nobody = uuid.uuid4()
    nf, br = ErrorCode.NOT_FOUND, ErrorCode.BAD_REQUEST
    return [
        (c.UpdateBoard(), br),
        (c.CreateColumn(title="x", after=nobody), nf),
        (c.CreateColumn(title="x", after=col0.id, before=col1.id), br),
        (c.UpdateColumn(column_id=nobody, title="x"), nf),
        (c.MoveColumn(column_id=nobody), nf),
        (c.MoveColumn(column_id=col0.id, after=col0.id), br),
        (c.MoveColumn(column_id=col0.id, before=nobody), nf),
        (c.MoveColumn(column_id=col0.id, after=col1.id, before=col1.id), br),
        (c.DeleteColumn(column_id=nobody), nf),
        (c.CreateCard(column_id=nobody, title="x"), nf),
        (c.CreateCard(column_id=col0.id, title="x", after=c10.id), br),  # neighbour elsewhere
        (c.CreateCard(column_id=col0.id, title="x", before=nobody), nf),
        (c.UpdateCard(card_id=nobody, title="x"), nf),
        (c.UpdateCard(card_id=c00.id), br),
        (c.MoveCard(card_id=nobody, column_id=col0.id), nf),
        (c.MoveCard(card_id=c00.id, column_id=nobody), nf),
        (c.MoveCard(card_id=c00.id, column_id=col0.id, after=c00.id), br),
        (c.MoveCard(card_id=c00.id, column_id=col1.id, after=c01.id), br),
        (c.MoveCard(card_id=c00.id, column_id=col0.id, after=c01.id, before=c01.id), br),
        (c.DeleteCard(card_id=nobody), nf),
        (c.DeleteCard(card_id=col0.id), nf),  # a column's id is not a card's
    ]


@pytest.mark.parametrize("index", range(21))
def test_a_refused_command_changes_nothing(index):
    state = BoardState(loaded())
    state.take_batch(7, 0)
    cmd, code = _bad_commands(state)[index]
    before = frozen(state)
    with pytest.raises(BoardcastError) as exc:
        state.apply(cmd)
    assert exc.value.code == code, exc.value.message
    assert frozen(state) == before
    batch = state.take_batch(7, 0)
    assert (batch.columns, batch.cards, batch.deleted_columns, batch.deleted_cards) == ([], [], [], [])


def test_the_bad_command_table_is_complete():
    assert len(_bad_commands(BoardState(loaded()))) == 21


# Random commands, valid or not, against a small board: refusals change nothing, accepted
# commands keep every invariant (ranks ordered, every card in a live column).
CMD_KINDS = st.sampled_from(
    [
        "board",
        "col.create",
        "col.update",
        "col.move",
        "col.delete",
        "card.create",
        "card.update",
        "card.move",
        "card.delete",
    ]
)


def _pick(items: list[Any], n: int) -> Any:
    return items[n % len(items)] if items and n % 5 else uuid.uuid4()  # sometimes an unknown id


def _random_command(state: BoardState, kind: str, a: int, b: int, d: int) -> c.Command:
    cols = list(state.column_order.ids())
    cards = list(state.cards)
    place: dict[str, Any] = {}
    if d % 4 == 1:
        place["after"] = _pick(cards if kind.startswith("card") else cols, b)
    elif d % 4 == 2:
        place["before"] = _pick(cards if kind.startswith("card") else cols, b)
    match kind:
        case "board":
            return c.UpdateBoard(title="t" if d % 2 else None)
        case "col.create":
            return c.CreateColumn(title="c", **place)
        case "col.update":
            return c.UpdateColumn(column_id=_pick(cols, a), title="u")
        case "col.move":
            return c.MoveColumn(column_id=_pick(cols, a), **place)
        case "col.delete":
            if d % 3 == 0:
                return c.DeleteColumn(column_id=_pick(cols, a), cards="move", move_to=_pick(cols, b))
            return c.DeleteColumn(column_id=_pick(cols, a), cards="delete" if d % 3 == 1 else "refuse")
        case "card.create":
            return c.CreateCard(column_id=_pick(cols, a), title="k", **place)
        case "card.update":
            return c.UpdateCard(card_id=_pick(cards, a), title="v" if d % 3 else None)
        case "card.move":
            return c.MoveCard(card_id=_pick(cards, a), column_id=_pick(cols, b + d), **place)
        case _:
            return c.DeleteCard(card_id=_pick(cards, a))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(CMD_KINDS, st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)), max_size=60)
)
def test_random_commands_refuse_cleanly_and_keep_invariants(steps):
    state = BoardState(loaded(columns=3, cards_per_column=3))
    for kind, a, b, d in steps:
        cmd = _random_command(state, kind, a, b, d)
        before = frozen(state)
        try:
            state.apply(cmd)
        except BoardcastError:
            assert frozen(state) == before, cmd
            continue
        snap = state.snapshot()
        col_ranks = [col.rank for col in snap.columns]
        assert col_ranks == sorted(set(col_ranks))
        assert set(state.columns) == {col.id for col in snap.columns}
        assert len(snap.cards) == len(state.cards)
        for col in snap.columns:
            ranks = [k.rank for k in snap.cards if k.column_id == col.id]
            assert ranks == sorted(set(ranks))
            assert [k.id for k in snap.cards if k.column_id == col.id] == state.card_order[col.id].ids()
