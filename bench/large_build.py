"""A large board for ``large_board``, built in the bench process without the server's REST
routes: the board's own rules (``actors.state.BoardState``) apply ordinary commands, and
``storage.BoardRepo.persist`` writes each chunk of them as one group commit, with the events
(bodies, request ids, fingerprints) exactly as the board actor writes them. So the rows and
the event log are what 60,000 commands from clients would have left, in seconds instead of
the minutes 60,000 REST calls take.

The board must not be active in a server while it is built (its actor would be fenced out
by the epoch this takes); the scenario builds it and then starts a fresh server.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from actors.board import fingerprint
from actors.state import BoardState
from protocol import commands as c
from storage import BoardRepo, StoredEvent, create_pool

_EVENT_JSON = msgspec.json.Encoder()
_COLOURS = ("green", "yellow", "orange", "red", "purple", "blue", "sky", "lime", "pink", "black")
_WORDS = (
    "api sync login export billing search invoice cache upload mobile onboarding report "
    "dashboard webhook retry schema migration alert audit theme layout filter import queue "
    "timeout token refund email calendar review release pipeline metrics backup"
).split()


@dataclass
class BuiltBoard:
    board_id: str
    columns: list[str]
    cards: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _title(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize()


def _description(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return ""
    lines = [f"## {_title(rng, 3)}", "", _title(rng, 12) + "."]
    lines += [f"- [ ] {_title(rng, 4)}" for _ in range(rng.randint(0, 4))]
    return "\n".join(lines)


class _Builder:
    """Applies commands to the board's state and commits them in chunks, as the actor does."""

    def __init__(self, repo: BoardRepo, state: BoardState, epoch: int, author: uuid.UUID, chunk: int) -> None:
        self.repo, self.st, self.epoch, self.author, self.chunk = repo, state, epoch, author, chunk
        self.events: list[StoredEvent] = []
        self.base_seq = state.seq
        self.counts: dict[str, int] = {}

    async def do(self, cmd: c.Command) -> c.Event:
        now_ms = int(time.time() * 1000)
        event = self.st.apply(cmd, self.author, now_ms)
        self.st.seq += 1
        kind = event.__struct_config__.tag
        assert isinstance(kind, str)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.events.append(
            StoredEvent(
                seq=self.st.seq,
                kind=kind,
                body=_EVENT_JSON.encode(event).decode(),
                author=self.author,
                request_id=f"large-{self.st.seq}",
                ts_ms=now_ms,
                fingerprint=fingerprint(cmd),
            )
        )
        if len(self.events) >= self.chunk:
            await self.flush()
        return event

    async def flush(self) -> None:
        if not self.events:
            return
        batch = self.st.take_batch(self.base_seq, self.epoch)
        batch.events = self.events
        await self.repo.persist(batch)
        self.events, self.base_seq = [], self.st.seq


async def build_large_board(
    db_url: str,
    board_id: str,
    author: uuid.UUID,
    *,
    columns: int,
    cards: int,
    seed: int = 10_000,
    chunk: int = 2_000,
) -> BuiltBoard:
    """Fill the (empty, inactive) board ``board_id``, owned by ``author``, with ``columns``
    columns and ``cards`` cards spread over them, with labels, custom field values, dates,
    assignees, checklists with items, comments and a few archived cards."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        repo = BoardRepo(pool)
        bid = uuid.UUID(board_id)
        epoch = await repo.claim_epoch(bid)
        loaded = await repo.load_board(bid, 0)
        assert epoch is not None and loaded is not None, board_id
        b = _Builder(repo, BoardState(loaded), epoch, author, chunk)
        col_ids = []
        for i in range(columns):
            ev = await b.do(c.CreateColumn(title=f"{_title(rng, 2)} {i}"))
            assert isinstance(ev, c.ColumnCreated)
            col_ids.append(ev.column.id)
        for col in col_ids[: columns // 4]:
            await b.do(c.ConfigureColumn(column_id=col, colour=rng.choice(_COLOURS)))
        label_ids = []
        for i in range(12):
            ev = await b.do(
                c.CreateLabel(name=f"{rng.choice(_WORDS)} {i}", colour=_COLOURS[i % len(_COLOURS)])
            )
            assert isinstance(ev, c.LabelCreated)
            label_ids.append(ev.label.id)
        fields: list[Any] = []
        for name, kind in (
            ("Estimate", "number"),
            ("Team", "select"),
            ("Customer", "text"),
            ("Reviewed", "checkbox"),
            ("Deadline", "date"),
        ):
            options = (
                [c.OptionIn(name=n) for n in ("Core", "Web", "Mobile", "Data")] if kind == "select" else []
            )
            ev = await b.do(c.CreateField(name=name, kind=kind, options=options))  # type: ignore[arg-type]
            assert isinstance(ev, c.FieldCreated)
            fields.append(ev.field)
        now_ms = int(time.time() * 1000)
        card_ids = []
        for i in range(cards):
            ev = await b.do(
                c.CreateCard(
                    column_id=col_ids[i % columns],
                    title=_title(rng, rng.randint(3, 8)),
                    description=_description(rng),
                )
            )
            assert isinstance(ev, c.CardCreated)
            cid = ev.card.id
            card_ids.append(cid)
            if rng.random() < 0.6:
                for lid in rng.sample(label_ids, rng.randint(1, 3)):
                    await b.do(c.AddLabel(card_id=cid, label_id=lid))
            for f in fields:
                if rng.random() >= 0.4:
                    continue
                value: str | float | bool
                match f.kind:
                    case "number":
                        value = float(rng.randint(1, 13))
                    case "select":
                        value = str(rng.choice(f.options).id)
                    case "text":
                        value = f"{_title(rng, 2)} Ltd"
                    case "checkbox":
                        value = rng.random() < 0.5
                    case _:
                        value = float(now_ms + rng.randint(-30, 90) * 86_400_000)  # as decoded
                await b.do(c.SetFieldValue(card_id=cid, field_id=f.id, value=value))
            if rng.random() < 0.3:
                due = now_ms + rng.randint(-20, 60) * 86_400_000
                await b.do(c.ScheduleCard(card_id=cid, due_ms=due, done=rng.random() < 0.3))
            if rng.random() < 0.25:
                await b.do(c.AssignCard(card_id=cid, user_id=author))
            for _ in range(0 if rng.random() >= 0.2 else rng.choice((1, 1, 1, 2))):
                ev = await b.do(c.CreateChecklist(card_id=cid, title=_title(rng, 2)))
                assert isinstance(ev, c.ChecklistCreated)
                for _ in range(rng.randint(3, 8)):
                    iev = await b.do(c.CreateItem(checklist_id=ev.checklist.id, text=_title(rng, 4)))
                    assert isinstance(iev, c.ItemCreated)
                    if rng.random() < 0.4:
                        await b.do(c.UpdateItem(item_id=iev.item.id, done=True))
            if rng.random() < 0.3:
                for _ in range(rng.randint(1, 4)):
                    mention = " @Developer" if rng.random() < 0.2 else ""
                    await b.do(
                        c.CreateComment(card_id=cid, body=f"{_title(rng, rng.randint(5, 25))}.{mention}")
                    )
            if rng.random() < 0.05:
                await b.do(c.ArchiveCard(card_id=cid))
        await b.flush()
        st = b.st
        counts = {
            "columns": len(st.columns),
            "cards": len(st.cards),
            "labels": len(st.labels),
            "fields": len(st.fields),
            "checklists": len(st.checklists),
            "items": len(st.items),
            "comments": len(st.comments),
            "events": st.seq,
            "cards_with_labels": sum(1 for x in st.cards.values() if x.label_ids),
            "field_values": sum(len(x.fields) for x in st.cards.values()),
            "archived_cards": sum(1 for x in st.cards.values() if x.archived),
        }
    finally:
        await pool.close()
    return BuiltBoard(
        board_id, [str(x) for x in col_ids], [str(x) for x in card_ids], counts, time.monotonic() - t0
    )
