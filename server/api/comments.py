"""REST for comments on cards: commenters and up create them, authors edit theirs, authors
and admins delete them."""

from __future__ import annotations

import msgspec
from aiohttp import web

from actors import GetSnapshot
from protocol import commands as c
from protocol.errors import not_found
from protocol.model import BoardSnapshot, Comment, Text
from server.access import Action, authorize, current_user
from server.api.ops import B, op_route
from server.http import Body, Route, json_response, path_uuid
from server.keys import MEMBERS, REGISTRY, SETTINGS

_CM = f"{B}/comments/{{comment_id}}"


class CommentBody(Body):
    body: Text


class CommentList(msgspec.Struct):
    comments: list[Comment]


async def list_comments(request: web.Request) -> web.Response:
    board_id = path_uuid(request, "board_id")
    card_id = path_uuid(request, "card_id")
    await authorize(request.app[MEMBERS], current_user(request), board_id, Action.READ)
    snap: BoardSnapshot = await request.app[REGISTRY].ask(
        board_id, GetSnapshot(), request.app[SETTINGS].ask_timeout_s
    )
    if all(card.id != card_id for card in snap.cards):
        raise not_found("card", card_id)
    return json_response(CommentList([cm for cm in snap.comments if cm.card_id == card_id]))


ROUTES: list[Route] = [
    Route(
        "GET",
        f"{B}/cards/{{card_id}}/comments",
        list_comments,
        "A card's comments, oldest first",
        response=CommentList,
    ),
    op_route(
        "POST",
        f"{B}/cards/{{card_id}}/comments",
        "Comment on a card (`@name` mentions of members are recorded)",
        lambda ids, b: c.CreateComment(card_id=ids["card_id"], body=b.body),
        CommentBody,
        Comment,
        201,
    ),
    op_route(
        "PATCH",
        _CM,
        "Edit your comment",
        lambda ids, b: c.EditComment(comment_id=ids["comment_id"], body=b.body),
        CommentBody,
        Comment,
    ),
    op_route(
        "DELETE",
        _CM,
        "Delete your comment (an admin may delete anyone's)",
        lambda ids, b: c.DeleteComment(comment_id=ids["comment_id"]),
    ),
]
