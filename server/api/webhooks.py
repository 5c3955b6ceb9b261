"""REST for a board's outgoing webhooks (docs/WEBHOOKS.md): admins create, list, change and
delete them and read their delivery attempts. Delivering is jobs/webhooks.py's work."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import typing
import uuid
from typing import Annotated

import msgspec
import structlog
from aiohttp import web

from jobs.targets import MAX_URL_LENGTH, TargetRefused, check_url
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.webhooks import SECRET_PREFIX
from server.access import Action, authorize, current_user
from server.http import Body, Route, at_least_one, json_response, path_uuid, query_int, read_body
from server.keys import MEMBERS, SETTINGS, WEBHOOK_GUARD, WEBHOOK_REPO
from storage.webhooks import MAX_WEBHOOKS_PER_BOARD, Attempt, TooManyWebhooks, WebhookRecord

log = structlog.get_logger(__name__)

ALL = "*"
# Every kind of the event union, as the board's event log names them (new kinds join it by
# being in protocol.commands.Event).
EVENT_KINDS: frozenset[str] = frozenset(str(t.__struct_config__.tag) for t in typing.get_args(c.Event))
MAX_PAGE = 200

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_LENGTH)]
Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^(\*|[a-z_]+\.[a-z_]+)$")]
Kinds = Annotated[list[Kind], msgspec.Meta(min_length=1, max_length=64)]
Description = Annotated[str, msgspec.Meta(max_length=500, pattern="^[^\x00]*$")]


class WebhookCreate(Body):
    url: Url
    # event kinds to deliver; ["*"]: every kind, new ones included
    events: Kinds = msgspec.field(default_factory=lambda: [ALL])
    description: Description = ""
    active: bool = True


class WebhookPatch(Body):
    rules = at_least_one("url", "events", "description", "active")
    url: Url | None = None
    events: Kinds | None = None
    description: Description | None = None
    active: bool | None = None  # true enables a disabled webhook again, from where it stopped


class Webhook(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    board_id: uuid.UUID
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    delivered_seq: int  # the board's seq this webhook is done with (delivered or not chosen)
    consecutive_failures: int
    next_attempt_at: dt.datetime | None  # when failing: the next attempt
    last_error: str | None
    disabled_at: dt.datetime | None
    disabled_reason: str | None


class WebhookCreated(Webhook, kw_only=True):
    secret: str  # shown here once; signs every delivery (Boardcast-Signature)


class WebhookList(msgspec.Struct):
    webhooks: list[Webhook]


class Delivery(msgspec.Struct, kw_only=True):
    id: int
    seq: int
    kind: str
    attempt: int
    outcome: str  # delivered | failed | refused (the SSRF guard refused the target's address)
    status: int | None
    error: str | None
    duration_ms: float
    created_at: dt.datetime


class DeliveryList(msgspec.Struct, kw_only=True):
    deliveries: list[Delivery]  # newest first
    next_before: int | None  # pass as ?before= for the next page; null on the last one


def _view(rec: WebhookRecord) -> Webhook:
    return Webhook(
        id=rec.id,
        board_id=rec.board_id,
        url=rec.url,
        events=[ALL] if rec.kinds is None else rec.kinds,
        description=rec.description,
        active=rec.active,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        delivered_seq=rec.cursor_seq,
        consecutive_failures=rec.consecutive_failures,
        next_attempt_at=rec.next_attempt_at if rec.active and rec.consecutive_failures else None,
        last_error=rec.last_error,
        disabled_at=rec.disabled_at,
        disabled_reason=rec.disabled_reason,
    )


def _kinds(events: list[str]) -> list[str] | None:
    """The kinds to store (None: every kind), or 400 naming an unknown one."""
    if ALL in events:
        if len(events) > 1:
            raise bad_request("events: '*' stands alone (every kind)")
        return None
    unknown = sorted(set(events) - EVENT_KINDS)
    if unknown:
        raise bad_request(f"events: unknown event kind {unknown[0]!r}", known=sorted(EVENT_KINDS))
    return sorted(set(events))


async def _check_target(request: web.Request, url: str) -> None:
    """400 unless the URL is well formed and every address it resolves to may be delivered to
    (checked again at every delivery)."""
    try:
        check_url(url)
    except ValueError as e:
        raise bad_request(f"url: must be {e}", reason="bad_url") from None
    try:
        async with asyncio.timeout(request.app[SETTINGS].webhook_timeout_s):
            await request.app[WEBHOOK_GUARD].check_target(url)
    except TargetRefused as e:
        raise bad_request(
            f"url: {e.message}; deliveries to internal addresses are refused (docs/WEBHOOKS.md)",
            reason="target_refused",
            range=e.reason,
            **({"address": e.address} if e.address else {}),
        ) from None
    except TimeoutError:
        raise bad_request("url: the host name did not resolve in time", reason="target_refused") from None


async def _board(request: web.Request) -> uuid.UUID:
    board_id = path_uuid(request, "board_id")
    await authorize(request.app[MEMBERS], current_user(request), board_id, Action.WEBHOOKS)
    return board_id


async def _webhook(request: web.Request) -> tuple[uuid.UUID, WebhookRecord]:
    board_id = await _board(request)
    webhook_id = path_uuid(request, "webhook_id")
    rec = await request.app[WEBHOOK_REPO].get(board_id, webhook_id)
    if rec is None:
        raise not_found("webhook", webhook_id)
    return board_id, rec


# ------------------------------------------------------------------ handlers


async def list_webhooks(request: web.Request) -> web.Response:
    board_id = await _board(request)
    return json_response(WebhookList([_view(r) for r in await request.app[WEBHOOK_REPO].for_board(board_id)]))


async def create_webhook(request: web.Request) -> web.Response:
    body: WebhookCreate = await read_body(request, WebhookCreate)
    board_id = await _board(request)
    kinds = _kinds(body.events)
    await _check_target(request, body.url)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    user = current_user(request)
    try:
        rec = await request.app[WEBHOOK_REPO].create(
            board_id, body.url, kinds, body.description, body.active, secret, user.id
        )
    except TooManyWebhooks:
        raise BoardcastError(
            ErrorCode.CONFLICT, f"a board has at most {MAX_WEBHOOKS_PER_BOARD} webhooks"
        ) from None
    if rec is None:
        raise not_found("board", board_id)
    log.info("webhook_created", board_id=str(board_id), webhook_id=str(rec.id), by=str(user.id))
    created = WebhookCreated(**msgspec.structs.asdict(_view(rec)), secret=secret)
    return json_response(created, 201)


async def get_webhook(request: web.Request) -> web.Response:
    _, rec = await _webhook(request)
    return json_response(_view(rec))


async def patch_webhook(request: web.Request) -> web.Response:
    body: WebhookPatch = await read_body(request, WebhookPatch)
    if body.url is None and body.events is None and body.description is None and body.active is None:
        raise bad_request("nothing to change: give 'url', 'events', 'description' or 'active'")
    board_id, rec = await _webhook(request)
    kinds = None if body.events is None else _kinds(body.events)
    if body.url is not None:
        await _check_target(request, body.url)
    updated = await request.app[WEBHOOK_REPO].update(
        board_id,
        rec.id,
        url=body.url,
        kinds=kinds,
        all_kinds=body.events is not None and kinds is None,
        description=body.description,
        active=body.active,
    )
    if updated is None:
        raise not_found("webhook", rec.id)
    if body.active and not rec.active:
        log.info("webhook_enabled", board_id=str(board_id), webhook_id=str(rec.id))
    return json_response(_view(updated))


async def delete_webhook(request: web.Request) -> web.Response:
    board_id, rec = await _webhook(request)
    if not await request.app[WEBHOOK_REPO].delete(board_id, rec.id):
        raise not_found("webhook", rec.id)
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    _, rec = await _webhook(request)
    limit = query_int(request, "limit", 1, MAX_PAGE, 50)
    before = query_int(request, "before", 1, 2**63 - 1)
    assert limit is not None
    found: list[Attempt] = await request.app[WEBHOOK_REPO].attempts(rec.id, before, limit + 1)
    page = found[:limit]
    return json_response(
        DeliveryList(
            deliveries=[Delivery(**{f: getattr(a, f) for f in Delivery.__struct_fields__}) for a in page],
            next_before=page[-1].id if len(found) > limit else None,
        )
    )


_W = "/api/v1/boards/{board_id}/webhooks"
ROUTES: list[Route] = [
    Route("GET", _W, list_webhooks, "The board's webhooks (admins)", response=WebhookList),
    Route(
        "POST",
        _W,
        create_webhook,
        "Create a webhook; the answer holds its signing secret, shown only here",
        WebhookCreate,
        WebhookCreated,
        201,
        errors=(409,),
    ),
    Route("GET", f"{_W}/{{webhook_id}}", get_webhook, "One webhook", response=Webhook),
    Route(
        "PATCH",
        f"{_W}/{{webhook_id}}",
        patch_webhook,
        "Change a webhook; `active: true` enables a disabled one again",
        WebhookPatch,
        Webhook,
    ),
    Route("DELETE", f"{_W}/{{webhook_id}}", delete_webhook, "Delete a webhook", status=204),
    Route(
        "GET",
        f"{_W}/{{webhook_id}}/deliveries",
        list_deliveries,
        "Delivery attempts, newest first",
        response=DeliveryList,
        int_query=(("limit", 1, MAX_PAGE), ("before", 1, 2**63 - 1)),
    ),
]
