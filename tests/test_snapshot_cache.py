"""A snapshot spliced from each entity's kept encoding is byte for byte the snapshot encoded
whole, in both encodings, after any run of commands (applied or refused)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.state import BoardState
from protocol import commands as c
from protocol.codec import JSON, MSGPACK, Codec
from protocol.errors import BoardcastError
from tests.test_model_rules import ANN, KINDS, _command, _pick, board, cols

# Commands that change an entity's plain fields in place, beside test_model_rules' KINDS.
EDITS = st.sampled_from(
    [
        "card.update",
        "card.schedule",
        "card.unassign",
        "label.remove",
        "label.update",
        "column.update",
        "column.move",
        "cl.rename",
        "item.update",
        "comment.edit",
        "field.update",
        "field.option",
        "board.update",
    ]
)


def _edit(s: BoardState, kind: str, a: int, b: int, d: int) -> c.Command:
    cards, labels, fields = list(s.cards), list(s.labels), list(s.fields)
    match kind:
        case "card.update":
            return c.UpdateCard(card_id=_pick(cards, a), title=f"t{d}", description=f"d{b}")
        case "card.schedule":
            return c.ScheduleCard(card_id=_pick(cards, a), due_ms=1000 + d, done=d % 2 == 0)
        case "card.unassign":
            return c.UnassignCard(card_id=_pick(cards, a), user_id=ANN)
        case "label.remove":
            return c.RemoveLabel(card_id=_pick(cards, a), label_id=_pick(labels, b))
        case "label.update":
            return c.UpdateLabel(label_id=_pick(labels, a), name=f"n{d}")
        case "column.update":
            return c.UpdateColumn(column_id=_pick(cols(s), a), title=f"c{d}")
        case "column.move":
            return c.MoveColumn(column_id=_pick(cols(s), a), before=_pick(cols(s), b))
        case "cl.rename":
            return c.RenameChecklist(checklist_id=_pick(list(s.checklists), a), title=f"r{d}")
        case "item.update":
            return c.UpdateItem(item_id=_pick(list(s.items), a), done=d % 2 == 0, text=f"i{d}")
        case "comment.edit":
            return c.EditComment(comment_id=_pick(list(s.comments), a), body=f"e{d}")
        case "field.update":
            return c.UpdateField(field_id=_pick(fields, a), name=f"f{d}")
        case "field.option":
            return c.AddFieldOption(field_id=_pick(fields, a), name=f"o{d}")
        case _:
            return c.UpdateBoard(title=f"b{d}")


def _same(s: BoardState) -> None:
    for codec in (MSGPACK, JSON):
        assert s.encoded_snapshot(codec) == codec.encode(s.snapshot()), codec.name


STEP = st.tuples(st.one_of(KINDS, EDITS), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=60))
def test_the_spliced_snapshot_equals_the_whole_one_after_any_commands(steps: list[Any]) -> None:
    s = board(columns=3, cards_per_column=3)
    _same(s)
    for kind, a, b, d in steps:
        cmd = _command(s, kind, a, b, d) if kind in KINDS.elements else _edit(s, kind, a, b, d)
        try:
            s.apply(cmd, ANN, 1)
        except BoardcastError:
            pass
        else:
            s.seq += 1
        _same(s)


class Counting(Codec):
    """MessagePack, recording what it is asked to encode."""

    def __init__(self) -> None:
        super().__init__("msgpack", binary=True)
        self.encoded: list[str] = []

    def encode(self, msg: Any) -> bytes:
        self.encoded.append(type(msg).__name__)
        return super().encode(msg)


def test_only_touched_entities_are_encoded_again() -> None:
    s = board(columns=2, cards_per_column=50)
    codec = Counting()
    first = s.encoded_snapshot(codec)
    assert codec.encoded == ["BoardSnapshot"], "the first snapshot is encoded whole"
    assert first == MSGPACK.encode(s.snapshot())
    codec.encoded.clear()
    card = next(iter(s.cards))
    s.apply(c.UpdateCard(card_id=card, title="changed"), ANN, 1)
    s.seq += 1
    spliced = s.encoded_snapshot(codec)
    assert codec.encoded == ["Card", "SnapshotWire"]
    assert spliced == MSGPACK.encode(s.snapshot())
