"""REST API (JSON): translates HTTP to board commands and back.

Routes are declared once in ``ROUTES`` with their body and response types; the router and
``/openapi.json`` are both built from that table, so the description cannot drift.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

import msgspec
from aiohttp import web

from actors import (
    AccessChanged,
    BoardRegistry,
    CommandResult,
    DeleteBoard,
    Execute,
    GetSnapshot,
    GetSnapshotJson,
)
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import BoardInfo, BoardSnapshot, Card, Column, Text, Title, Uuid
from server import accounts, membership
from server.access import Action, Grant, User, authorize, current_user
from server.api import (
    attachments,
    blob_urls,
    cards,
    checklists,
    comments,
    history,
    ops,
    taxonomy,
    transfer,
    webhooks,
)
from server.http import (
    IDEMPOTENCY_KEY,
    Body,
    Route,
    at_least_one,
    at_most_one,
    json_response,
    parse_uuid,
    path_uuid,
    read_body,
)
from server.keys import MEMBERS, REGISTRY, REPO, SETTINGS
from storage import BoardRepo, MemberRepo

Visibility = Literal["private", "signed_in"]

# ------------------------------------------------------------------ bodies


class BoardCreate(Body):
    title: Title
    description: Text = ""
    visibility: Visibility = "private"


class BoardPatch(Body):
    rules = at_least_one("title", "description", "visibility")
    title: Title | None = None
    description: Text | None = None
    visibility: Visibility | None = None


class ColumnCreate(Body):
    rules = at_most_one("after", "before")
    title: Title
    after: Uuid | None = None
    before: Uuid | None = None


class ColumnPatch(Body):
    title: Title


class Placement(Body):
    rules = at_most_one("after", "before")
    after: Uuid | None = None
    before: Uuid | None = None


class CardCreate(Body):
    rules = at_most_one("after", "before")
    column_id: Uuid
    title: Title
    description: Text = ""
    after: Uuid | None = None
    before: Uuid | None = None


class CardPatch(Body):
    rules = at_least_one("title", "description")
    title: Title | None = None
    description: Text | None = None


class CardMoveBody(Body):
    rules = at_most_one("after", "before")
    column_id: Uuid
    after: Uuid | None = None
    before: Uuid | None = None


class BoardList(msgspec.Struct):
    boards: list[BoardInfo]


class ColumnList(msgspec.Struct):
    columns: list[Column]


class CardList(msgspec.Struct):
    cards: list[Card]


# ------------------------------------------------------------------ plumbing


@dataclass(slots=True)
class Ctx:
    request: web.Request
    repo: BoardRepo
    members: MemberRepo
    registry: BoardRegistry
    timeout_s: float
    user: User
    grant: Grant | None = None


def ctx(request: web.Request) -> Ctx:
    app = request.app
    return Ctx(
        request, app[REPO], app[MEMBERS], app[REGISTRY], app[SETTINGS].ask_timeout_s, current_user(request)
    )


async def _board_access(request: web.Request, action: Action) -> tuple[Ctx, uuid.UUID]:
    cx = ctx(request)
    board_id = path_uuid(request, "board_id")
    cx.grant = await authorize(cx.members, cx.user, board_id, action)
    return cx, board_id


async def _execute(
    request: web.Request, action: Action, cmd: c.Command
) -> tuple[CommandResult, uuid.UUID, Ctx]:
    cx, board_id = await _board_access(request, action)
    rid = request.headers.get("Idempotency-Key")
    if rid is not None and IDEMPOTENCY_KEY.fullmatch(rid) is None:
        raise bad_request("Idempotency-Key must be 1-64 visible ASCII characters (spaces inside allowed)")
    result: CommandResult = await cx.registry.ask(
        board_id, Execute(author=cx.user.id, rid=rid, cmd=cmd, received=time.perf_counter()), cx.timeout_s
    )
    return result, board_id, cx


async def _snapshot(cx: Ctx, board_id: uuid.UUID) -> BoardSnapshot:
    snap: BoardSnapshot = await cx.registry.ask(board_id, GetSnapshot(), cx.timeout_s)
    return snap


def _find(items: list[Any], item_id: uuid.UUID, what: str) -> Any:
    for item in items:
        if item.id == item_id:
            return item
    raise not_found(what, item_id)


# ------------------------------------------------------------------ boards


async def list_boards(request: web.Request) -> web.Response:
    cx = ctx(request)
    return json_response(BoardList(await cx.repo.list_boards(cx.user.id)))


async def create_board(request: web.Request) -> web.Response:
    body: BoardCreate = await read_body(request, BoardCreate)
    cx = ctx(request)
    info = await cx.repo.create_board(cx.user.id, body.title, body.description, body.visibility)
    return json_response(info, 201)


async def get_board(request: web.Request) -> web.Response:
    if "at_seq" in request.query or "at" in request.query:
        return await history.board_at(request)  # time travel, from the event log
    cx, board_id = await _board_access(request, Action.READ)
    body: bytes = await cx.registry.ask(board_id, GetSnapshotJson(), cx.timeout_s)
    return web.Response(body=body, content_type="application/json")


async def patch_board(request: web.Request) -> web.Response:
    body: BoardPatch = await read_body(request, BoardPatch)
    if body.title is not None or body.description is not None or body.visibility is None:
        _, board_id, cx = await _execute(
            request, Action.ADMIN, c.UpdateBoard(title=body.title, description=body.description)
        )
    else:
        cx, board_id = await _board_access(request, Action.ADMIN)
    if body.visibility is not None:
        await cx.members.set_visibility(board_id, body.visibility)
        if body.visibility == "private":
            # Signed-in viewers who are not members lose the board at once.
            cx.registry.tell_if_active(board_id, AccessChanged(user_id=None))
    assert cx.grant is not None
    info = await cx.members.board_info(board_id, cx.grant.role)
    if info is None:
        raise not_found("board", board_id)
    return json_response(info)


async def delete_board(request: web.Request) -> web.Response:
    cx, board_id = await _board_access(request, Action.DELETE)
    await cx.registry.ask(board_id, DeleteBoard(author=cx.user.id), cx.timeout_s)
    return web.Response(status=204)


# ------------------------------------------------------------------ columns


async def list_columns(request: web.Request) -> web.Response:
    cx, board_id = await _board_access(request, Action.READ)
    return json_response(ColumnList((await _snapshot(cx, board_id)).columns))


async def create_column(request: web.Request) -> web.Response:
    body: ColumnCreate = await read_body(request, ColumnCreate)
    result, _, _ = await _execute(
        request, Action.WRITE, c.CreateColumn(title=body.title, after=body.after, before=body.before)
    )
    return await _entity_response(request, result, "column", 201)


async def get_column(request: web.Request) -> web.Response:
    cx, board_id = await _board_access(request, Action.READ)
    snap = await _snapshot(cx, board_id)
    return json_response(_find(snap.columns, path_uuid(request, "column_id"), "column"))


async def patch_column(request: web.Request) -> web.Response:
    body: ColumnPatch = await read_body(request, ColumnPatch)
    col_id = path_uuid(request, "column_id")
    result, _, _ = await _execute(request, Action.WRITE, c.UpdateColumn(column_id=col_id, title=body.title))
    return await _entity_response(request, result, "column")


async def move_column(request: web.Request) -> web.Response:
    body: Placement = await read_body(request, Placement)
    col_id = path_uuid(request, "column_id")
    result, _, _ = await _execute(
        request, Action.WRITE, c.MoveColumn(column_id=col_id, after=body.after, before=body.before)
    )
    return await _entity_response(request, result, "column")


async def delete_column(request: web.Request) -> web.Response:
    col_id = path_uuid(request, "column_id")
    policy = request.query.get("cards", "refuse")
    if policy not in ("refuse", "move", "delete"):
        raise bad_request("cards must be refuse, move or delete")
    cards = cast(c.CardsPolicy, policy)
    move_to = None
    if "move_to" in request.query:
        move_to = parse_uuid(request.query["move_to"])
        if move_to is None:
            raise bad_request("move_to is not a UUID in canonical form")
    await _execute(request, Action.WRITE, c.DeleteColumn(column_id=col_id, cards=cards, move_to=move_to))
    return web.Response(status=204)


async def _entity_response(
    request: web.Request, result: CommandResult, kind: str, status: int = 200
) -> web.Response:
    """The column or card as the command left it. A retried request whose result is no longer
    in memory is answered with the item as it is now."""
    if result.entity is not None:
        return json_response(result.entity, status)
    key = f"{kind}_id"
    if key not in request.match_info:
        raise BoardcastError(
            ErrorCode.CONFLICT,
            f"this Idempotency-Key was already used to create a {kind} (seq {result.seq})",
            {"seq": result.seq},
        )
    snap = await _snapshot(ctx(request), path_uuid(request, "board_id"))
    items: list[Any] = snap.columns if kind == "column" else snap.cards
    return json_response(_find(items, path_uuid(request, key), kind), status)


# ------------------------------------------------------------------ cards


async def list_cards(request: web.Request) -> web.Response:
    cx, board_id = await _board_access(request, Action.READ)
    cards = (await _snapshot(cx, board_id)).cards
    column = request.query.get("column_id")
    if column is not None:
        col_id = parse_uuid(column)
        if col_id is None:
            raise bad_request("column_id is not a UUID in canonical form")
        cards = [card for card in cards if card.column_id == col_id]
    return json_response(CardList(cards))


async def create_card(request: web.Request) -> web.Response:
    body: CardCreate = await read_body(request, CardCreate)
    result, _, _ = await _execute(
        request,
        Action.WRITE,
        c.CreateCard(
            column_id=body.column_id,
            title=body.title,
            description=body.description,
            after=body.after,
            before=body.before,
        ),
    )
    return await _entity_response(request, result, "card", 201)


async def get_card(request: web.Request) -> web.Response:
    cx, board_id = await _board_access(request, Action.READ)
    snap = await _snapshot(cx, board_id)
    return json_response(_find(snap.cards, path_uuid(request, "card_id"), "card"))


async def patch_card(request: web.Request) -> web.Response:
    body: CardPatch = await read_body(request, CardPatch)
    card_id = path_uuid(request, "card_id")
    result, _, _ = await _execute(
        request, Action.WRITE, c.UpdateCard(card_id=card_id, title=body.title, description=body.description)
    )
    return await _entity_response(request, result, "card")


async def move_card(request: web.Request) -> web.Response:
    body: CardMoveBody = await read_body(request, CardMoveBody)
    card_id = path_uuid(request, "card_id")
    result, _, _ = await _execute(
        request,
        Action.WRITE,
        c.MoveCard(card_id=card_id, column_id=body.column_id, after=body.after, before=body.before),
    )
    return await _entity_response(request, result, "card")


async def delete_card(request: web.Request) -> web.Response:
    card_id = path_uuid(request, "card_id")
    await _execute(request, Action.WRITE, c.DeleteCard(card_id=card_id))
    return web.Response(status=204)


# ------------------------------------------------------------------ the table


_B = "/api/v1/boards/{board_id}"
BOARD_ROUTES: list[Route] = [
    Route("GET", "/api/v1/boards", list_boards, "Boards the caller belongs to", response=BoardList),
    Route("POST", "/api/v1/boards", create_board, "Create a board", BoardCreate, BoardInfo, 201),
    Route(
        "GET",
        _B,
        get_board,
        "A whole board (snapshot); with at_seq or at, as it was then",
        response=BoardSnapshot,
        params=history.TIME_TRAVEL_PARAMS,
    ),
    Route(
        "PATCH",
        _B,
        patch_board,
        "Update the title, description or visibility",
        BoardPatch,
        BoardInfo,
        idempotency_key=True,
    ),
    Route("DELETE", _B, delete_board, "Delete the board (owner only)", status=204),
    Route("GET", f"{_B}/columns", list_columns, "Columns in order", response=ColumnList),
    Route(
        "POST",
        f"{_B}/columns",
        create_column,
        "Create a column",
        ColumnCreate,
        Column,
        201,
        idempotency_key=True,
    ),
    Route("GET", f"{_B}/columns/{{column_id}}", get_column, "One column", response=Column),
    Route(
        "PATCH",
        f"{_B}/columns/{{column_id}}",
        patch_column,
        "Rename a column",
        ColumnPatch,
        Column,
        idempotency_key=True,
    ),
    Route(
        "DELETE",
        f"{_B}/columns/{{column_id}}",
        delete_column,
        "Delete a column; one holding cards needs cards=move (with move_to) or cards=delete",
        status=204,
        idempotency_key=True,
        query=("move_to",),
        choices=(("cards", ("refuse", "move", "delete")),),
    ),
    Route(
        "POST",
        f"{_B}/columns/{{column_id}}/move",
        move_column,
        "Move a column",
        Placement,
        Column,
        idempotency_key=True,
    ),
    Route(
        "GET",
        f"{_B}/cards",
        list_cards,
        "Cards in order (optionally of one column)",
        response=CardList,
        query=("column_id",),
    ),
    Route("POST", f"{_B}/cards", create_card, "Create a card", CardCreate, Card, 201, idempotency_key=True),
    Route("GET", f"{_B}/cards/{{card_id}}", get_card, "One card", response=Card),
    Route(
        "PATCH", f"{_B}/cards/{{card_id}}", patch_card, "Update a card", CardPatch, Card, idempotency_key=True
    ),
    Route(
        "DELETE", f"{_B}/cards/{{card_id}}", delete_card, "Delete a card", status=204, idempotency_key=True
    ),
    Route(
        "POST",
        f"{_B}/cards/{{card_id}}/move",
        move_card,
        "Move a card",
        CardMoveBody,
        Card,
        idempotency_key=True,
    ),
]

MODEL_ROUTES: list[Route] = cards.ROUTES + taxonomy.ROUTES + checklists.ROUTES + comments.ROUTES + ops.ROUTES
BLOB_ROUTES: list[Route] = attachments.ROUTES + blob_urls.ROUTES
ROUTES: list[Route] = (
    accounts.ROUTES
    + BOARD_ROUTES
    + membership.ROUTES
    + webhooks.ROUTES
    + MODEL_ROUTES
    + BLOB_ROUTES
    + history.ROUTES
    + transfer.ROUTES
)
