"""Board commands over REST: the generic ``POST {B}/commands`` route, which takes any client
command as its body, and the factory the resource routes of the board model are made with
(server/api/cards.py, taxonomy.py, checklists.py, comments.py).

Every route authorizes through server.access (the role-by-action table, the comment author
rule, the server-only commands) and sends one command to the board's actor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from actors import CommandResult, Execute, GetSnapshot
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request
from protocol.model import BoardSnapshot
from server.access import (
    Action,
    authorize,
    check_command,
    client_may_send,
    current_user,
    needs_author,
)
from server.http import IDEMPOTENCY_KEY, Body, Route, json_response, path_uuid, read_body
from server.keys import MEMBERS, REGISTRY, SETTINGS

B = "/api/v1/boards/{board_id}"


class CommandBody(Body):
    """One board command, as the ``op`` of a WebSocket ``cmd`` frame."""

    op: c.Command


class CommandAnswer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a command did: its seq and event (``event`` is absent for a duplicate whose event
    is no longer in memory)."""

    seq: int
    duplicate: bool = False
    event: c.Event | None = None


async def execute(request: web.Request, cmd: c.Command) -> CommandResult:
    """Authorize ``cmd`` for the caller (the least role it needs, then the author rule for
    comments) and apply it; the board's answer."""
    user = current_user(request)
    app = request.app
    board_id = path_uuid(request, "board_id")
    timeout_s = app[SETTINGS].ask_timeout_s
    # The least any board command needs: commenters get past this for comments only.
    grant = await authorize(app[MEMBERS], user, board_id, Action.READ)
    own = True
    comment_id = needs_author(cmd)
    if comment_id is not None:
        # A comment's author never changes, so reading it before the command is race-free; a
        # comment deleted meanwhile is refused by the board as not found.
        snap: BoardSnapshot = await app[REGISTRY].ask(board_id, GetSnapshot(), timeout_s)
        author = next((cm.author_id for cm in snap.comments if cm.id == comment_id), None)
        own = author is None or author == user.id
    check_command(grant.role, cmd, own)
    rid = request.headers.get("Idempotency-Key")
    if rid is not None and IDEMPOTENCY_KEY.fullmatch(rid) is None:
        raise bad_request("Idempotency-Key must be 1-64 visible ASCII characters (spaces inside allowed)")
    result: CommandResult = await app[REGISTRY].ask(
        board_id, Execute(author=user.id, rid=rid, cmd=cmd, received=time.perf_counter()), timeout_s
    )
    return result


async def post_command(request: web.Request) -> web.Response:
    body: CommandBody = await read_body(request, CommandBody)
    cmd = body.op
    client_may_send(cmd)
    result = await execute(request, cmd)
    return json_response(CommandAnswer(seq=result.seq, duplicate=result.duplicate, event=_event(result)))


def _event(result: CommandResult) -> c.Event | None:
    return None if result.event is None else result.event.event


Build = Callable[[dict[str, uuid.UUID], Any], c.Command]


def op_route(
    method: str,
    path: str,
    summary: str,
    build: Build,
    body: type[Any] | None = None,
    response: type[Any] | None = None,
    status: int = 200,
) -> Route:
    """A route that builds one command from its path ids (every ``{x_id}``) and body, and
    answers with the entity the command left (``response``), or 204 when there is none."""
    names = [part[1:-1] for part in path.split("/") if part.startswith("{") and part != "{board_id}"]
    # The operation id in /openapi.json: the method and the path's words, e.g.
    # ``put_cards_labels`` for PUT {B}/cards/{card_id}/labels/{label_id}.
    words = [p for p in path.removeprefix(B).split("/") if p and not p.startswith("{")]
    operation = "_".join([method.lower(), *words])

    async def handler(request: web.Request) -> web.StreamResponse:
        parsed = None if body is None else await read_body(request, body)
        ids = {name: path_uuid(request, name) for name in names}
        result = await execute(request, build(ids, parsed))
        if response is None:
            return web.Response(status=204)
        if result.entity is None:
            # A retry of a command whose event is no longer in the board's memory.
            raise BoardcastError(
                ErrorCode.CONFLICT,
                f"this Idempotency-Key was already used (seq {result.seq}); read the current state",
                {"seq": result.seq},
            )
        return json_response(result.entity, status)

    handler.__name__ = handler.__qualname__ = operation
    return Route(
        method,
        path,
        handler,
        summary,
        body,
        response,
        204 if response is None else status,
        idempotency_key=True,
    )


ROUTES: list[Route] = [
    Route(
        "POST",
        f"{B}/commands",
        post_command,
        "Apply any board command (the WebSocket `cmd` op, as JSON): answers its seq and event",
        CommandBody,
        CommandAnswer,
        idempotency_key=True,
    ),
]
