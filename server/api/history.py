"""History over REST: the activity feed, the board as it was (time travel) and a card's history.

All of it is read-only and served by the history reader from the event log and stored
snapshots (actors/history.py); the live board actor is never asked. Whoever may read a board
may read its history (server/access.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from actors.history import HistoryMetrics, HistoryReader, decode_event
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.history import ActivityItem, ActivityPage, Author, CardHistory, CardStep
from protocol.model import BoardSnapshot
from server.access import Action, authorize, current_user
from server.http import QueryParam, Route, json_response, path_uuid
from server.keys import MEMBERS, METRICS, POOL, SETTINGS
from storage.history import HistoryRepo, LoggedEvent

MAX_PAGE = 200
DEFAULT_PAGE = 50
_MAX_SEQ = 2**62


HISTORY_METRICS = web.AppKey("history_metrics", HistoryMetrics)


async def history_ctx(app: web.Application) -> AsyncIterator[None]:
    """The history reader's metrics, on the process's registry."""
    app[HISTORY_METRICS] = HistoryMetrics(app[METRICS].registry)
    yield


def reader(request: web.Request) -> HistoryReader:
    app = request.app
    return HistoryReader(HistoryRepo(app[POOL]), app[SETTINGS].history_snapshot_every, app[HISTORY_METRICS])


async def _readable(request: web.Request) -> uuid.UUID:
    board_id = path_uuid(request, "board_id")
    await authorize(request.app[MEMBERS], current_user(request), board_id, Action.READ)
    return board_id


def _int_param(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise bad_request(f"{name} must be a whole number from {lo} to {hi}", parameter=name)
    value = int(raw)
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be a whole number from {lo} to {hi}", parameter=name)
    return value


class _Page:
    """``limit``, ``cursor`` and ``order`` of a feed request, checked."""

    def __init__(self, request: web.Request) -> None:
        self.limit = _int_param(request, "limit", 1, MAX_PAGE) or DEFAULT_PAGE
        self.cursor = _int_param(request, "cursor", 0, _MAX_SEQ)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("order must be 'asc' or 'desc'", parameter="order")
        self.newest_first = order == "desc"

    @property
    def below(self) -> int | None:
        return self.cursor if self.newest_first else None

    @property
    def above(self) -> int | None:
        return None if self.newest_first else self.cursor

    def next_cursor(self, rows: list[LoggedEvent]) -> str | None:
        # The seq of the last item: the next page starts strictly past it.
        return str(rows[-1].seq) if len(rows) == self.limit else None


def _author(row: LoggedEvent) -> Author:
    return Author(id=row.author, name=row.author_name)


def summary(event: c.Event) -> str:
    """One line saying what happened, from the event alone."""
    match event:
        case c.BoardUpdated(title=str() as title):
            return f"renamed the board to “{title}”"
        case c.BoardUpdated():
            return "changed the board's description"
        case c.BoardDeleted():
            return "deleted the board"
        case c.ColumnCreated():
            return f"added column “{event.column.title}”"
        case c.ColumnUpdated():
            return f"renamed a column to “{event.title}”"
        case c.ColumnMoved():
            return "moved a column"
        case c.ColumnDeleted():
            n = len(event.card_ids)
            return f"deleted a column and its {n} card{'s' if n != 1 else ''}" if n else "deleted a column"
        case c.CardCreated():
            return f"added card “{event.card.title}”"
        case c.CardUpdated(title=str() as title):
            return f"renamed a card to “{title}”"
        case c.CardUpdated():
            return "edited a card's description"
        case c.CardMoved():
            return "moved a card"
        case c.CardDeleted():
            return "deleted a card"
        case c.WebhookDisabled():
            return f"a webhook to {event.host} was disabled: {event.reason}"
    kind = str(type(event).__struct_config__.tag)
    return kind.replace(".", " ").replace("_", " ")


def _item(row: LoggedEvent) -> ActivityItem:
    event = decode_event(row.body)
    return ActivityItem(
        seq=row.seq,
        kind=row.kind,
        at=row.created_at.astimezone(dt.UTC),
        author=_author(row),
        summary=summary(event),
        event=event,
        request_id=row.request_id,
    )


# ------------------------------------------------------------------ handlers


async def board_activity(request: web.Request) -> web.Response:
    board_id = await _readable(request)
    page = _Page(request)
    repo = HistoryRepo(request.app[POOL])
    rows = await repo.feed(
        board_id, below=page.below, above=page.above, limit=page.limit, newest_first=page.newest_first
    )
    return json_response(ActivityPage(items=[_item(r) for r in rows], next_cursor=page.next_cursor(rows)))


async def _card_rows(request: web.Request, page: _Page) -> tuple[uuid.UUID, uuid.UUID, list[LoggedEvent]]:
    board_id = await _readable(request)
    card_id = path_uuid(request, "card_id")
    repo = HistoryRepo(request.app[POOL])
    clock = await repo.clock(board_id)
    if clock is None:
        raise not_found("board", board_id)
    await reader(request).catch_up(board_id, clock.seq)
    rows = await repo.card_feed(
        board_id,
        card_id,
        below=page.below,
        above=page.above,
        limit=page.limit,
        newest_first=page.newest_first,
    )
    if not rows and page.cursor is None:
        raise not_found("card", card_id)  # never on this board
    return board_id, card_id, rows


async def card_activity(request: web.Request) -> web.Response:
    page = _Page(request)
    _, _, rows = await _card_rows(request, page)
    return json_response(ActivityPage(items=[_item(r) for r in rows], next_cursor=page.next_cursor(rows)))


async def card_history(request: web.Request) -> web.Response:
    page = _Page(request)
    if "order" not in request.query:
        page.newest_first = False  # a history reads from the card's creation on
    board_id, card_id, rows = await _card_rows(request, page)
    oldest_first = sorted(rows, key=lambda r: r.seq)
    steps = await reader(request).card_history(board_id, card_id, oldest_first)
    out = [
        CardStep(
            seq=s.row.seq,
            kind=s.row.kind,
            at=s.row.created_at.astimezone(dt.UTC),
            author=_author(s.row),
            event=s.event,
            card=s.card,
            checklists=s.parts.checklists,
            items=s.parts.items,
            comments=s.parts.comments,
            attachments=s.parts.attachments,
        )
        for s in steps
    ]
    if page.newest_first:
        out.reverse()
    return json_response(CardHistory(card_id=card_id, steps=out, next_cursor=page.next_cursor(rows)))


def _parse_time(raw: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or len(raw) > 40:
        raise bad_request(
            "at must be an RFC 3339 time with a UTC offset, such as 2026-01-02T03:04:05Z", parameter="at"
        )
    return at


async def board_at(request: web.Request) -> web.Response:
    """``GET /api/v1/boards/{id}?at_seq=N`` or ``?at=TIME``: the board as it was then."""
    board_id = await _readable(request)
    if "at_seq" in request.query and "at" in request.query:
        raise bad_request("give at most one of 'at_seq' and 'at'")
    repo = HistoryRepo(request.app[POOL])
    clock = await repo.clock(board_id)
    if clock is None:
        raise not_found("board", board_id)
    seq = _int_param(request, "at_seq", 0, _MAX_SEQ)
    if seq is None:
        at = _parse_time(request.query["at"])
        found = await repo.seq_at(board_id, at)
        if found is None:
            raise BoardcastError(
                ErrorCode.NOT_FOUND,
                "the board did not exist yet at that time",
                {"at": request.query["at"], "created_at": clock.created_at.astimezone(dt.UTC).isoformat()},
            )
        seq = found
    elif seq > clock.seq:
        raise BoardcastError(
            ErrorCode.NOT_FOUND,
            f"the board has no seq {seq} yet: its latest is {clock.seq}",
            {"at_seq": seq, "seq": clock.seq},
        )
    snap: BoardSnapshot = await reader(request).board_at(board_id, seq)
    return json_response(snap)


_SEQ = (("type", "integer"), ("minimum", 0), ("maximum", _MAX_SEQ))
PAGE_PARAMS = (
    QueryParam(
        "limit",
        f"items per page (default {DEFAULT_PAGE})",
        (("type", "integer"), ("minimum", 1), ("maximum", MAX_PAGE)),
    ),
    QueryParam(
        "cursor", "the next_cursor of the previous page", (("type", "string"), ("pattern", "^[0-9]{1,19}$"))
    ),
    QueryParam(
        "order", "desc (newest first, the default) or asc", (("type", "string"), ("enum", ["asc", "desc"]))
    ),
)
TIME_TRAVEL_PARAMS = (
    QueryParam("at_seq", "the board as it was right after this seq (read-only, from the event log)", _SEQ),
    QueryParam(
        "at",
        "the board as it was at this RFC 3339 time (read-only); not with at_seq",
        (("type", "string"), ("format", "date-time"), ("maxLength", 40)),
    ),
)

_B = "/api/v1/boards/{board_id}"
ROUTES: list[Route] = [
    Route(
        "GET",
        f"{_B}/activity",
        board_activity,
        "The board's activity feed (event log)",
        response=ActivityPage,
        params=PAGE_PARAMS,
    ),
    Route(
        "GET",
        f"{_B}/cards/{{card_id}}/activity",
        card_activity,
        "The activity feed of one card",
        response=ActivityPage,
        params=PAGE_PARAMS,
    ),
    Route(
        "GET",
        f"{_B}/cards/{{card_id}}/history",
        card_history,
        "A card's state after each event that changed it",
        response=CardHistory,
        params=PAGE_PARAMS,
    ),
]
