"""The board model's pure rules (actors/state*.py): WIP limits, archive and restore, column
delete policies, labels, custom fields, checklists, comments and attachments; refusals that
change nothing; what a batch writes; and the protocol doc covering every command and event."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.ranks import RANK_MAX
from actors.state import BoardState
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode
from protocol.model import Attachment, Card, Column
from storage import LoadedBoard

OWNER = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
ANN = uuid.UUID("00000000-0000-4000-8000-0000000000a2")
BOB = uuid.UUID("00000000-0000-4000-8000-0000000000a3")
STRANGER = uuid.UUID("00000000-0000-4000-8000-0000000000a4")


def board(columns: int = 2, cards_per_column: int = 2) -> BoardState:
    cols = [Column(id=uuid.uuid4(), title=f"col{i}", rank=(i + 1) * 1000) for i in range(columns)]
    cards = [
        Card(id=uuid.uuid4(), column_id=col.id, title=f"{col.title}-card{j}", rank=(j + 1) * 10)
        for col in cols
        for j in range(cards_per_column)
    ]
    return BoardState(
        LoadedBoard(
            id=uuid.uuid4(),
            title="Board",
            description="",
            owner_id=OWNER,
            seq=0,
            epoch=1,
            columns=cols,
            cards=cards,
            recent_requests=[],
            members={OWNER: "Olga Owner", ANN: "Ann Lee", BOB: "Bob"},
        )
    )


def frozen(state: BoardState) -> bytes:
    return msgspec.json.encode(state.snapshot())


def refused(state: BoardState, cmd: c.Command, code: ErrorCode, author: uuid.UUID = OWNER) -> BoardcastError:
    before = frozen(state)
    with pytest.raises(BoardcastError) as caught:
        state.apply(cmd, author, 1)
    assert caught.value.code == code, caught.value.message
    assert frozen(state) == before, "a refused command changed the board"
    return caught.value


def cols(state: BoardState) -> list[uuid.UUID]:
    return state.column_order.ids()


def cards_of(state: BoardState, col: uuid.UUID) -> list[uuid.UUID]:
    return state.card_order[col].ids()


def attachment(card_id: uuid.UUID, n: int = 1, thumb: bool = True) -> Attachment:
    return Attachment(
        id=uuid.uuid4(),
        card_id=card_id,
        name=f"f{n}.png",
        content_type="image/png",
        size=10 * n,
        blob_key=f"blob/{n}",
        thumb_key=f"thumb/{n}" if thumb else None,
        created_by=ANN,
        created_at_ms=1000 + n,
    )


# ------------------------------------------------------------------ WIP limits


def test_wip_limit_refuses_creates_moves_and_restores_past_it_unless_the_board_allows():
    s = board(columns=2, cards_per_column=2)
    a, b = cols(s)
    s.apply(c.ConfigureColumn(column_id=b, wip_limit=3))
    s.apply(c.CreateCard(column_id=b, title="third"))
    err = refused(s, c.CreateCard(column_id=b, title="fourth"), ErrorCode.CONFLICT)
    assert err.details == {"reason": "wip_limit", "column_id": str(b), "limit": 3, "cards": 3}
    refused(s, c.MoveCard(card_id=cards_of(s, a)[0], column_id=b), ErrorCode.CONFLICT)
    # a move within the full column is no addition
    s.apply(c.MoveCard(card_id=cards_of(s, b)[-1], column_id=b, before=cards_of(s, b)[0]))
    # archived cards do not count: archive one, one more fits, and the archived one cannot return
    archived = cards_of(s, b)[0]
    s.apply(c.ArchiveCard(card_id=archived))
    s.apply(c.MoveCard(card_id=cards_of(s, a)[0], column_id=b))
    refused(s, c.RestoreCard(card_id=archived), ErrorCode.CONFLICT)
    # moving cards in through a column delete counts them too
    refused(s, c.DeleteColumn(column_id=a, cards="move", move_to=b), ErrorCode.CONFLICT)
    s.apply(c.ConfigureBoard(allow_wip_overflow=True))
    s.apply(c.RestoreCard(card_id=archived))
    s.apply(c.DeleteColumn(column_id=a, cards="move", move_to=b))
    assert s.active[b] == 5 and len(cards_of(s, b)) == 5
    # lowering the limit below the count refuses only further additions
    s.apply(c.ConfigureBoard(allow_wip_overflow=False))
    s.apply(c.ConfigureColumn(column_id=b, wip_limit=1))
    refused(s, c.CreateCard(column_id=b, title="more"), ErrorCode.CONFLICT)
    s.apply(c.ConfigureColumn(column_id=b, wip_limit=None))
    s.apply(c.CreateCard(column_id=b, title="more"))


# ------------------------------------------------------------------ archive, column delete


def test_archive_and_restore_of_columns_and_cards():
    s = board()
    a, b = cols(s)
    ev = s.apply(c.ArchiveColumn(column_id=a))
    assert isinstance(ev, c.ColumnArchived) and ev.column.archived and s.columns[a].archived
    refused(s, c.ArchiveColumn(column_id=a), ErrorCode.CONFLICT)
    refused(s, c.CreateCard(column_id=a, title="x"), ErrorCode.CONFLICT)
    refused(s, c.MoveCard(card_id=cards_of(s, b)[0], column_id=a), ErrorCode.CONFLICT)
    # its own cards keep their places and may move within it or out of it
    s.apply(c.MoveCard(card_id=cards_of(s, a)[1], column_id=a, before=cards_of(s, a)[0]))
    card = cards_of(s, a)[0]
    s.apply(c.ArchiveCard(card_id=card))
    refused(s, c.RestoreCard(card_id=card), ErrorCode.CONFLICT)  # its column is archived
    ev = s.apply(c.RestoreColumn(column_id=a))
    assert isinstance(ev, c.ColumnRestored) and not ev.column.archived
    refused(s, c.RestoreColumn(column_id=a), ErrorCode.CONFLICT)
    ev = s.apply(c.RestoreCard(card_id=card))
    assert isinstance(ev, c.CardRestored) and not ev.card.archived
    refused(s, c.RestoreCard(card_id=card), ErrorCode.CONFLICT)


def test_column_delete_refuses_cards_unless_told_to_move_or_delete_them():
    s = board(columns=3, cards_per_column=2)
    a, b, e = cols(s)
    s.apply(c.ArchiveCard(card_id=cards_of(s, e)[0]))
    s.apply(c.DeleteCard(card_id=cards_of(s, e)[1]))
    err = refused(s, c.DeleteColumn(column_id=e), ErrorCode.CONFLICT)  # an archived card counts
    assert err.details == {"reason": "column_not_empty", "cards": 1}
    refused(s, c.DeleteColumn(column_id=a, cards="move"), ErrorCode.BAD_REQUEST)  # no move_to
    refused(s, c.DeleteColumn(column_id=a, cards="delete", move_to=b), ErrorCode.BAD_REQUEST)
    refused(s, c.DeleteColumn(column_id=a, cards="move", move_to=a), ErrorCode.BAD_REQUEST)
    refused(s, c.DeleteColumn(column_id=a, cards="move", move_to=uuid.uuid4()), ErrorCode.NOT_FOUND)

    moving = cards_of(s, a)
    before_b = cards_of(s, b)
    ev = s.apply(c.DeleteColumn(column_id=a, cards="move", move_to=b))
    assert isinstance(ev, c.ColumnDeleted) and ev.card_ids == []
    assert cards_of(s, b) == before_b + moving  # appended, in their order
    assert {k.id for k in ev.moved} >= set(moving)
    assert all(k.column_id == b and k.rank == s.cards[k.id].rank for k in ev.moved)
    assert a not in s.columns and a not in s.card_order

    # delete them: the cards go with everything on them, and their blob keys are in the event
    card = cards_of(s, e)[0]
    s.apply(c.CreateChecklist(card_id=card, title="cl"))
    s.apply(c.CreateComment(card_id=card, body="hi"), ANN, 5)
    att = attachment(card)
    s.apply(c.AddAttachment(attachment=att))
    ev = s.apply(c.DeleteColumn(column_id=e, cards="delete"))
    assert isinstance(ev, c.ColumnDeleted) and ev.card_ids == [card]
    assert ev.blob_keys == ["blob/1", "thumb/1"]
    assert not s.checklists and not s.comments and not s.attachments
    batch = s.take_batch(0, 1)
    assert set(batch.deleted_columns) == {a, e} and card in batch.deleted_cards
    assert len(batch.deleted_checklists) == 1 and len(batch.deleted_comments) == 1
    assert batch.deleted_attachments == [att.id]


# ------------------------------------------------------------------ labels, fields


def test_labels_on_cards_and_a_label_delete_takes_it_off_every_card_in_the_same_event():
    s = board()
    ev = s.apply(c.CreateLabel(name="Bug", colour="red"))
    assert isinstance(ev, c.LabelCreated)
    label = ev.label.id
    k1, k2, k3 = list(s.cards)[:3]
    s.apply(c.AddLabel(card_id=k1, label_id=label))
    s.apply(c.AddLabel(card_id=k1, label_id=label))  # twice changes nothing
    s.apply(c.AddLabel(card_id=k3, label_id=label))
    ev = s.apply(c.RemoveLabel(card_id=k3, label_id=label))
    assert isinstance(ev, c.LabelRemoved) and ev.card.label_ids == [] == s.cards[k3].label_ids
    s.apply(c.AddLabel(card_id=k2, label_id=label))
    assert s.cards[k1].label_ids == [label]
    refused(s, c.AddLabel(card_id=k3, label_id=uuid.uuid4()), ErrorCode.NOT_FOUND)
    ev = s.apply(c.UpdateLabel(label_id=label, colour="#00ff00"))
    assert isinstance(ev, c.LabelUpdated) and ev.label.colour == "#00ff00" and ev.label.name == "Bug"
    refused(s, c.UpdateLabel(label_id=label), ErrorCode.BAD_REQUEST)
    ev = s.apply(c.DeleteLabel(label_id=label))
    assert isinstance(ev, c.LabelDeleted) and {k.id for k in ev.cards} == {k1, k2}
    assert all(k.label_ids == [] for k in ev.cards)
    assert all(label not in k.label_ids for k in s.cards.values()) and not s.labels
    for n in range(200):
        s.apply(c.CreateLabel(name=f"l{n}", colour="red"))
    refused(s, c.CreateLabel(name="one too many", colour="red"), ErrorCode.BAD_REQUEST)


def test_custom_field_values_are_typed_and_validated():
    s = board()
    card = next(iter(s.cards))
    ids = {}
    for kind in ("text", "number", "date", "checkbox"):
        ev = s.apply(c.CreateField(name=kind, kind=kind))
        assert isinstance(ev, c.FieldCreated)
        ids[kind] = ev.field.id
    ev = s.apply(c.CreateField(name="prio", kind="select", options=[c.OptionIn(name="High")]))
    assert isinstance(ev, c.FieldCreated)
    select, high = ev.field.id, ev.field.options[0].id
    assert [f.rank for f in s.snapshot().fields] == [1, 2, 3, 4, 5]
    refused(s, c.CreateField(name="x", kind="text", options=[c.OptionIn(name="no")]), ErrorCode.BAD_REQUEST)

    good: list[tuple[str, Any, Any]] = [
        ("text", "hello", "hello"),
        ("number", 2.5, 2.5),
        ("date", 1767225600000.0, 1767225600000),
        ("checkbox", True, True),
    ]
    for kind, value, stored in good:
        s.apply(c.SetFieldValue(card_id=card, field_id=ids[kind], value=value))
        assert s.cards[card].fields[ids[kind]] == stored
        assert type(s.cards[card].fields[ids[kind]]) is type(stored)
    s.apply(c.SetFieldValue(card_id=card, field_id=select, value=str(high)))
    bad: list[tuple[uuid.UUID, Any]] = [
        (ids["text"], 3.0),
        (ids["number"], "3"),
        (ids["number"], float("inf")),
        (ids["number"], float("nan")),
        (ids["number"], True),
        (ids["date"], 1.5),
        (ids["date"], -1.0),
        (ids["date"], 2.0**60),
        (ids["checkbox"], 1.0),
        (select, str(uuid.uuid4())),
        (select, True),
    ]
    for field_id, value in bad:
        refused(s, c.SetFieldValue(card_id=card, field_id=field_id, value=value), ErrorCode.BAD_REQUEST)
    refused(s, c.SetFieldValue(card_id=card, field_id=uuid.uuid4(), value="x"), ErrorCode.NOT_FOUND)
    s.apply(c.SetFieldValue(card_id=card, field_id=ids["text"], value=None))
    assert ids["text"] not in s.cards[card].fields

    refused(s, c.AddFieldOption(field_id=ids["text"], name="no"), ErrorCode.BAD_REQUEST)
    ev = s.apply(c.RemoveFieldOption(field_id=select, option_id=high))
    assert isinstance(ev, c.FieldUpdated) and [k.id for k in ev.cards] == [card] and ev.field.options == []
    assert select not in s.cards[card].fields
    ev = s.apply(c.DeleteField(field_id=ids["number"]))
    assert isinstance(ev, c.FieldDeleted) and [k.id for k in ev.cards] == [card]
    assert ids["number"] not in s.cards[card].fields and ids["number"] not in s.fields


# ------------------------------------------------------------------ card details


def test_dates_assignees_and_cover():
    s = board()
    card = next(iter(s.cards))
    ev = s.apply(c.ScheduleCard(card_id=card, start_ms=1000, due_ms=2000))
    assert isinstance(ev, c.CardScheduled) and (ev.card.start_ms, ev.card.due_ms, ev.card.done) == (
        1000,
        2000,
        False,
    )
    refused(s, c.ScheduleCard(card_id=card, start_ms=3000), ErrorCode.BAD_REQUEST)  # after the due date
    refused(s, c.ScheduleCard(card_id=card), ErrorCode.BAD_REQUEST)
    s.apply(c.ScheduleCard(card_id=card, due_ms=None, done=True))
    assert (s.cards[card].start_ms, s.cards[card].due_ms, s.cards[card].done) == (1000, None, True)

    s.apply(c.AssignCard(card_id=card, user_id=ANN))
    s.apply(c.AssignCard(card_id=card, user_id=BOB))
    s.apply(c.AssignCard(card_id=card, user_id=ANN))
    assert s.cards[card].assignees == [ANN, BOB]
    refused(s, c.AssignCard(card_id=card, user_id=STRANGER), ErrorCode.BAD_REQUEST)
    s.apply(c.UnassignCard(card_id=card, user_id=ANN))
    assert s.cards[card].assignees == [BOB]

    other = list(s.cards)[1]
    att, elsewhere = attachment(card, 1), attachment(other, 2, thumb=False)
    s.apply(c.AddAttachment(attachment=att))
    s.apply(c.AddAttachment(attachment=elsewhere))
    refused(s, c.AddAttachment(attachment=att), ErrorCode.CONFLICT)
    refused(s, c.AddAttachment(attachment=attachment(uuid.uuid4())), ErrorCode.NOT_FOUND)
    refused(s, c.SetCover(card_id=card, attachment_id=elsewhere.id), ErrorCode.BAD_REQUEST)
    s.apply(c.SetCover(card_id=card, attachment_id=att.id))
    ev = s.apply(c.DeleteAttachment(attachment_id=att.id))
    assert isinstance(ev, c.AttachmentDeleted)
    assert (ev.blob_key, ev.thumb_key, ev.card_id) == ("blob/1", "thumb/1", card)
    assert ev.card is not None and ev.card.cover_id is None and s.cards[card].cover_id is None
    ev = s.apply(c.DeleteCard(card_id=other))
    assert isinstance(ev, c.CardDeleted) and ev.blob_keys == ["blob/2"]


def test_an_event_keeps_its_entity_as_the_command_left_it():
    """Events are encoded at commit time, after later commands of the batch ran."""
    s = board()
    card = next(iter(s.cards))
    first = s.apply(c.AssignCard(card_id=card, user_id=ANN))
    s.apply(c.AssignCard(card_id=card, user_id=BOB))
    s.apply(c.ScheduleCard(card_id=card, done=True))
    assert isinstance(first, c.CardAssigned)
    assert first.card.assignees == [ANN] and not first.card.done


# ------------------------------------------------------------------ checklists, comments


def test_checklists_and_items_are_ranked_and_items_move_between_checklists():
    s = board()
    k1, k2 = list(s.cards)[:2]
    ev = s.apply(c.CreateChecklist(card_id=k1, title="A"))
    assert isinstance(ev, c.ChecklistCreated)
    cl_a = ev.checklist.id
    ev = s.apply(c.CreateChecklist(card_id=k1, title="B", before=cl_a))
    assert isinstance(ev, c.ChecklistCreated)
    cl_b = ev.checklist.id
    ev = s.apply(c.CreateChecklist(card_id=k2, title="C"))
    assert isinstance(ev, c.ChecklistCreated)
    cl_c = ev.checklist.id
    assert s.checklist_order[k1].ids() == [cl_b, cl_a]
    refused(s, c.MoveChecklist(checklist_id=cl_a, after=cl_c), ErrorCode.BAD_REQUEST)  # another card's
    s.apply(c.MoveChecklist(checklist_id=cl_b, after=cl_a))
    assert s.checklist_order[k1].ids() == [cl_a, cl_b]

    items = []
    for n in range(3):
        ev = s.apply(c.CreateItem(checklist_id=cl_a, text=f"i{n}"))
        assert isinstance(ev, c.ItemCreated)
        items.append(ev.item.id)
    refused(s, c.CreateItem(checklist_id=cl_a, text="x", assignee_id=STRANGER), ErrorCode.BAD_REQUEST)
    ev = s.apply(c.MoveItem(item_id=items[2], checklist_id=cl_c))
    assert isinstance(ev, c.ItemMoved) and (ev.item.checklist_id, ev.item.card_id) == (cl_c, k2)
    refused(s, c.MoveItem(item_id=items[0], checklist_id=cl_a, after=items[2]), ErrorCode.BAD_REQUEST)
    s.apply(c.MoveItem(item_id=items[0], checklist_id=cl_a, after=items[1]))
    assert s.item_order[cl_a].ids() == [items[1], items[0]]
    ev = s.apply(c.UpdateItem(item_id=items[1], done=True, assignee_id=ANN, due_ms=5))
    assert isinstance(ev, c.ItemUpdated) and (ev.item.done, ev.item.assignee_id, ev.item.due_ms) == (
        True,
        ANN,
        5,
    )
    s.apply(c.UpdateItem(item_id=items[1], assignee_id=None))
    assert s.items[items[1]].assignee_id is None and s.items[items[1]].due_ms == 5
    refused(s, c.UpdateItem(item_id=items[1]), ErrorCode.BAD_REQUEST)
    ev = s.apply(c.DeleteChecklist(checklist_id=cl_a))
    assert isinstance(ev, c.ChecklistDeleted) and set(ev.item_ids) == {items[0], items[1]}
    assert set(s.items) == {items[2]}
    # a card's delete takes its checklists and items with it
    s.apply(c.DeleteCard(card_id=k2))
    assert not s.items and set(s.checklists) == {cl_b}


def test_many_items_rebalance_their_checklist_and_stay_below_2_53():
    s = board()
    ev = s.apply(c.CreateChecklist(card_id=next(iter(s.cards)), title="A"))
    assert isinstance(ev, c.ChecklistCreated)
    cl = ev.checklist.id
    first = s.apply(c.CreateItem(checklist_id=cl, text="first"))
    assert isinstance(first, c.ItemCreated)
    rebalanced = 0
    for n in range(80):  # always right after the first: halves the gap until none is left
        ev = s.apply(c.CreateItem(checklist_id=cl, text=f"i{n}", after=first.item.id))
        assert isinstance(ev, c.ItemCreated)
        rebalanced += bool(ev.rebalanced)
        for rc in ev.rebalanced:
            assert s.items[rc.id].rank == rc.rank
    assert rebalanced >= 1
    ranks = [s.items[i].rank for i in s.item_order[cl].ids()]
    assert ranks == sorted(set(ranks)) and all(0 < r <= RANK_MAX < 2**53 for r in ranks)


def test_comments_mentions_and_only_the_author_edits():
    s = board()
    card = next(iter(s.cards))
    ev = s.apply(
        c.CreateComment(card_id=card, body="@bob and @AnnLee, also @ann again, not @nobody or a@bob"), ANN, 42
    )
    assert isinstance(ev, c.CommentCreated)
    cm = ev.comment
    assert (cm.author_id, cm.created_at_ms, cm.edited_at_ms) == (ANN, 42, None)
    assert cm.mentions == [BOB, ANN]
    assert s.owns(c.EditComment(comment_id=cm.id, body="x"), ANN)
    assert not s.owns(c.DeleteComment(comment_id=cm.id), BOB)
    assert s.owns(c.DeleteCard(card_id=card), BOB)
    refused(s, c.EditComment(comment_id=cm.id, body="mine now"), ErrorCode.FORBIDDEN, author=BOB)
    ev = s.apply(c.EditComment(comment_id=cm.id, body="@olgaowner"), ANN, 50)
    assert (
        isinstance(ev, c.CommentEdited) and ev.comment.mentions == [OWNER] and ev.comment.edited_at_ms == 50
    )
    ev = s.apply(c.DeleteComment(comment_id=cm.id), BOB, 60)  # the access rules decide who may
    assert isinstance(ev, c.CommentDeleted) and ev.card_id == card and not s.comments


# ------------------------------------------------------------------ batches


def test_a_batch_carries_every_changed_table_once():
    s = board()
    card = next(iter(s.cards))
    s.take_batch(0, 1)
    label = s.apply(c.CreateLabel(name="L", colour="blue"))
    field = s.apply(c.CreateField(name="F", kind="text"))
    cl = s.apply(c.CreateChecklist(card_id=card, title="C"))
    assert isinstance(cl, c.ChecklistCreated)
    item = s.apply(c.CreateItem(checklist_id=cl.checklist.id, text="I"))
    s.apply(c.CreateComment(card_id=card, body="hi"), ANN, 1)
    s.apply(c.AddAttachment(attachment=attachment(card)))
    s.apply(c.ConfigureBoard(allow_wip_overflow=True))
    s.apply(c.ConfigureColumn(column_id=cols(s)[0], colour="green"))
    s.apply(c.ScheduleCard(card_id=card, done=True))
    s.apply(c.ScheduleCard(card_id=card, done=False))
    b = s.take_batch(0, 1)
    assert b.allow_wip_overflow
    assert isinstance(label, c.LabelCreated) and isinstance(field, c.FieldCreated)
    assert isinstance(item, c.ItemCreated)
    assert [x.id for x in b.labels] == [label.label.id] and [x.id for x in b.fields] == [field.field.id]
    assert len(b.checklists) == len(b.items) == len(b.comments) == len(b.attachments) == 1
    assert [k.id for k in b.cards] == [card] and not b.cards[0].done and len(b.columns) == 1
    empty = s.take_batch(0, 1)
    assert not (empty.cards or empty.labels or empty.items or empty.deleted_cards)


# ------------------------------------------------------------------ random commands


def _pick(items: list[uuid.UUID], i: int) -> uuid.UUID:
    return items[i % len(items)] if items else uuid.uuid4()


KINDS = st.sampled_from(
    [
        "wip",
        "overflow",
        "col.archive",
        "col.restore",
        "col.delete",
        "card.create",
        "card.move",
        "card.archive",
        "card.restore",
        "card.delete",
        "label.create",
        "label.delete",
        "label.add",
        "field.create",
        "field.set",
        "field.delete",
        "cl.create",
        "cl.move",
        "cl.delete",
        "item.create",
        "item.move",
        "item.delete",
        "comment",
        "attach",
        "attach.delete",
        "cover",
        "assign",
    ]
)


def _command(s: BoardState, kind: str, a: int, b: int, d: int) -> c.Command:
    columns, cards = cols(s), list(s.cards)
    cls, items = list(s.checklists), list(s.items)
    place: dict[str, Any] = {}
    if d % 3 == 1 and items:
        place["after"] = _pick(items, b)
    match kind:
        case "wip":
            return c.ConfigureColumn(column_id=_pick(columns, a), wip_limit=None if d % 4 == 0 else 1 + d % 3)
        case "overflow":
            return c.ConfigureBoard(allow_wip_overflow=d % 2 == 0)
        case "col.archive":
            return c.ArchiveColumn(column_id=_pick(columns, a))
        case "col.restore":
            return c.RestoreColumn(column_id=_pick(columns, a))
        case "col.delete":
            if d % 2:
                return c.DeleteColumn(column_id=_pick(columns, a), cards="move", move_to=_pick(columns, b))
            return c.DeleteColumn(column_id=_pick(columns, a), cards="delete" if d % 4 else "refuse")
        case "card.create":
            return c.CreateCard(column_id=_pick(columns, a), title="k")
        case "card.move":
            return c.MoveCard(card_id=_pick(cards, a), column_id=_pick(columns, b))
        case "card.archive":
            return c.ArchiveCard(card_id=_pick(cards, a))
        case "card.restore":
            return c.RestoreCard(card_id=_pick(cards, a))
        case "card.delete":
            return c.DeleteCard(card_id=_pick(cards, a))
        case "label.create":
            return c.CreateLabel(name="l", colour="red")
        case "label.delete":
            return c.DeleteLabel(label_id=_pick(list(s.labels), a))
        case "label.add":
            return c.AddLabel(card_id=_pick(cards, a), label_id=_pick(list(s.labels), b))
        case "field.create":
            return c.CreateField(name="f", kind="checkbox" if d % 2 else "number")
        case "field.set":
            return c.SetFieldValue(
                card_id=_pick(cards, a), field_id=_pick(list(s.fields), b), value=d % 2 == 0
            )
        case "field.delete":
            return c.DeleteField(field_id=_pick(list(s.fields), a))
        case "cl.create":
            return c.CreateChecklist(card_id=_pick(cards, a), title="c")
        case "cl.move":
            return c.MoveChecklist(checklist_id=_pick(cls, a), before=_pick(cls, b) if d % 2 else None)
        case "cl.delete":
            return c.DeleteChecklist(checklist_id=_pick(cls, a))
        case "item.create":
            return c.CreateItem(checklist_id=_pick(cls, a), text="i", **place)
        case "item.move":
            return c.MoveItem(item_id=_pick(items, a), checklist_id=_pick(cls, b), **place)
        case "item.delete":
            return c.DeleteItem(item_id=_pick(items, a))
        case "comment":
            return c.CreateComment(card_id=_pick(cards, a), body="@ann hi")
        case "attach":
            return c.AddAttachment(attachment=attachment(_pick(cards, a), d))
        case "attach.delete":
            return c.DeleteAttachment(attachment_id=_pick(list(s.attachments), a))
        case "cover":
            return c.SetCover(card_id=_pick(cards, a), attachment_id=_pick(list(s.attachments), b))
        case _:
            return c.AssignCard(card_id=_pick(cards, a), user_id=(ANN, BOB, STRANGER)[d % 3])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KINDS, st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)), max_size=60))
def test_random_model_commands_refuse_cleanly_and_keep_invariants(steps):
    s = board(columns=3, cards_per_column=2)
    for kind, a, b, d in steps:
        cmd = _command(s, kind, a, b, d)
        before = frozen(s)
        try:
            s.apply(cmd, ANN, 1)
        except BoardcastError:
            assert frozen(s) == before, cmd
            continue
        snap = s.snapshot()
        # indexes agree with the entities
        for col in snap.columns:
            ids = s.card_order[col.id].ids()
            assert all(s.cards[i].column_id == col.id for i in ids)
            assert s.active[col.id] == sum(not s.cards[i].archived for i in ids)
            created_here = isinstance(cmd, c.CreateCard) and cmd.column_id == col.id
            if col.wip_limit is not None and not s.allow_wip_overflow and created_here:
                assert s.active[col.id] <= col.wip_limit
        assert len(snap.cards) == len(s.cards)
        assert {i.id for i in snap.items} == set(s.items)
        assert {x.id for x in snap.checklists} == set(s.checklists)
        for item in s.items.values():
            assert s.checklists[item.checklist_id].card_id == item.card_id
            assert item.id in s.item_order[item.checklist_id]
        for cm in s.comments.values():
            assert cm.card_id in s.cards
        for att in s.attachments.values():
            assert att.card_id in s.cards
        for card in s.cards.values():
            assert set(card.label_ids) <= set(s.labels)
            assert set(card.fields) <= set(s.fields)
            assert card.cover_id is None or s.attachments[card.cover_id].card_id == card.id


# ------------------------------------------------------------------ the doc covers everything


def test_protocol_doc_has_an_example_of_every_command_and_event():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    shown = set(re.findall(r'\{"(?:op|kind)":"([a-z_.]+)"', doc))
    ops = {t.__struct_config__.tag for t in c.Command.__args__}  # type: ignore[attr-defined]
    kinds = {t.__struct_config__.tag for t in c.Event.__args__}  # type: ignore[attr-defined]
    assert ops - shown == set() and kinds - shown == set()


# ------------------------------------------------------------------ integers in JSON


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_presence_integers_past_2_53_are_refused_in_both_encodings(encoding):
    from protocol.codec import JSON, MSGPACK, FrameError

    codec = MSGPACK if encoding == "msgpack" else JSON
    enc = msgspec.msgpack.encode if encoding == "msgpack" else msgspec.json.encode
    board_id = str(uuid.uuid4())
    ok = codec.decode(enc({"type": "presence", "board_id": board_id, "state": {"x": 2**53 - 1}}))
    assert ok.state == {"x": 2**53 - 1}  # type: ignore[union-attr]
    with pytest.raises(FrameError) as caught:
        codec.decode(enc({"type": "presence", "board_id": board_id, "state": {"x": 2**53}}))
    assert caught.value.code == ErrorCode.BAD_REQUEST
