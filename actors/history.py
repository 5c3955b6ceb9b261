"""The history reader: boards as they were, rebuilt from the event log (actors/replay.py).

It reads the log and stored snapshots and never talks to the board actor, so a history read
costs the live board nothing. As it replays it stores what it learns for the next reader: a
snapshot every ``snapshot_every`` seqs, and which events changed which card. The first read of
a long log pays for the replay once; later reads replay at most ``snapshot_every`` events.
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from actors.replay import CardParts, ReplayError, ReplayState
from protocol import commands as c
from protocol.model import BoardSnapshot, Card, dec_hook
from storage.history import HistoryRepo, LoggedEvent, StoredSnapshot

log = structlog.get_logger(__name__)

_EVENTS: msgspec.json.Decoder[c.Event] = msgspec.json.Decoder(c.Event, dec_hook=dec_hook)
_SNAPSHOT: msgspec.json.Decoder[BoardSnapshot] = msgspec.json.Decoder(BoardSnapshot, dec_hook=dec_hook)
_ENCODE = msgspec.json.Encoder()

Visit = Callable[[LoggedEvent, c.Event, set[uuid.UUID], ReplayState], None]


def decode_event(body: str) -> c.Event:
    return _EVENTS.decode(body)


@dataclass(frozen=True, slots=True)
class CardStep:
    """A card right after one event that changed it (None once it is gone)."""

    row: LoggedEvent
    event: c.Event
    card: Card | None
    parts: CardParts


def _with_row(step: CardStep, row: LoggedEvent) -> CardStep:
    return CardStep(row, step.event, step.card, step.parts)


class HistoryMetrics:
    """What history reads cost, on the process's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replayed = Counter(
            "boardcast_history_replayed_events", "Logged events applied by history replays", registry=registry
        )
        self.snapshots = Counter(
            "boardcast_history_snapshots_written",
            "Board snapshots stored by history replays",
            registry=registry,
        )
        self.failures = Counter(
            "boardcast_history_replay_failures",
            "History replays that found the log or a snapshot damaged",
            registry=registry,
        )
        self.seconds = Histogram(
            "boardcast_history_replay_seconds",
            "Time to rebuild a board, a card's history or the card index",
            ["what"],
            registry=registry,
        )


class HistoryReader:
    def __init__(
        self, repo: HistoryRepo, snapshot_every: int, metrics: HistoryMetrics | None = None, chunk: int = 1000
    ) -> None:
        self._repo = repo
        self._every = snapshot_every
        self._chunk = chunk
        self._metrics = metrics

    async def board_at(self, board_id: uuid.UUID, seq: int) -> BoardSnapshot:
        """The board right after the event at ``seq`` (which the caller checked exists)."""
        t0 = time.perf_counter()
        state = await self._start(board_id, seq)
        await self._replay(board_id, state, seq)
        self._observe("board", t0)
        return state.snapshot()

    async def catch_up(self, board_id: uuid.UUID, upto: int) -> None:
        """Extend the per-card index of the log (and the snapshots) to ``upto``."""
        indexed = await self._repo.indexed_seq(board_id)
        if indexed >= upto:
            return
        t0 = time.perf_counter()
        state = await self._start(board_id, indexed)
        await self._replay(board_id, state, upto, index=True)
        self._observe("index", t0)
        log.info("history_indexed", board_id=str(board_id), from_seq=indexed, to_seq=upto)

    async def card_history(
        self, board_id: uuid.UUID, card_id: uuid.UUID, rows: list[LoggedEvent]
    ) -> list[CardStep]:
        """The card after each of ``rows`` (events that changed it, oldest first)."""
        if not rows:
            return []
        steps: dict[int, CardStep] = {}
        wanted = {r.seq for r in rows}

        def visit(row: LoggedEvent, event: c.Event, touched: set[uuid.UUID], st: ReplayState) -> None:
            if row.seq in wanted:
                steps[row.seq] = CardStep(row, event, st.card(card_id), st.card_parts(card_id))

        t0 = time.perf_counter()
        stored = await self._repo.snapshot_seqs(board_id, rows[0].seq - 1, rows[-1].seq)
        state: ReplayState | None = None
        for row in rows:
            # A card changed now and then over a long log: from the nearest snapshot before
            # each change, not through the whole stretch between the first and the last.
            nearest = stored[bisect.bisect_right(stored, row.seq - 1) - 1] if stored else -1
            if state is None or nearest > state.seq:
                state = await self._start(board_id, row.seq - 1)
            await self._replay(board_id, state, row.seq, visit=visit)
        self._observe("card", t0)
        # The feed's rows carry author names; the replay's do not.
        return [_with_row(steps[r.seq], r) for r in rows if r.seq in steps]

    def _observe(self, what: str, t0: float) -> None:
        if self._metrics is not None:
            self._metrics.seconds.labels(what=what).observe(time.perf_counter() - t0)

    # ------------------------------------------------------------------ replay

    async def _start(self, board_id: uuid.UUID, seq: int) -> ReplayState:
        stored = await self._repo.snapshot_at_or_below(board_id, seq)
        if stored is None:
            raise ReplayError(f"board {board_id} has no stored origin to replay from", seq)
        return ReplayState(_SNAPSHOT.decode(stored.body))

    async def _replay(
        self,
        board_id: uuid.UUID,
        state: ReplayState,
        upto: int,
        *,
        index: bool = False,
        visit: Visit | None = None,
    ) -> None:
        """Apply the logged events after ``state.seq`` up to ``upto``, a chunk at a time,
        storing snapshots (and with ``index``, the card index) chunk by chunk."""
        try:
            await self._apply_log(board_id, state, upto, index, visit)
        except ReplayError as e:
            if self._metrics is not None:
                self._metrics.failures.inc()
            log.error("history_replay_failed", board_id=str(board_id), error=e.message, seq=state.seq)
            raise

    async def _apply_log(
        self, board_id: uuid.UUID, state: ReplayState, upto: int, index: bool, visit: Visit | None
    ) -> None:
        stored = set(await self._repo.snapshot_seqs(board_id, state.seq, upto))
        while state.seq < upto:
            rows = await self._repo.events(board_id, state.seq, upto, self._chunk)
            if not rows:
                raise ReplayError(
                    f"the log of board {board_id} ends at seq {state.seq}, not {upto}", state.seq
                )
            snapshots: list[StoredSnapshot] = []
            touches: list[tuple[uuid.UUID, int]] = []
            for row in rows:
                event = _EVENTS.decode(row.body)
                touched = state.apply(row.seq, event)
                if index:
                    touches.extend((card_id, row.seq) for card_id in touched)
                if row.seq % self._every == 0 and row.seq not in stored:
                    body = _ENCODE.encode(state.snapshot()).decode()
                    snapshots.append(StoredSnapshot(row.seq, body, row.created_at))
                if visit is not None:
                    visit(row, event, touched, state)
            if snapshots or index:
                await self._repo.record(board_id, snapshots, touches, state.seq if index else None)
            if self._metrics is not None:
                self._metrics.replayed.inc(len(rows))
                self._metrics.snapshots.inc(len(snapshots))
