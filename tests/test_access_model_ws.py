"""Every board model command over the WebSocket, per role (docs/ACCESS.md): commenters
comment and nothing else, members do card work, admins also manage labels, fields and others'
comments; only authors edit comments; nobody sends attachment.add; refused commands change
nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import ENCODINGS
from tests.identity import ws_url_with_token
from tests.roles import accounts, board_url, board_with_roles, call
from tests.wsclient import WsClient

# What each role may do, written out here rather than read from server.access.
MAY = {
    "viewer": set(),
    "commenter": {"comment"},
    "member": {"comment", "write"},
    "admin": {"comment", "write", "admin"},
}


async def _made(http: Any, base: str, bid: str, who: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await call(http, "POST", board_url(base, bid, path), who, json=body)
    assert r.status == 201, r.body
    return r.body  # type: ignore[no-any-return]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("role", ["viewer", "commenter", "member", "admin"])
async def test_each_role_against_every_model_command(http, start_server, encoding, role):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "caller")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, people, caller=role)
    col = (await _made(http, srv.base, bid, owner, "/columns", {"title": "A"}))["id"]
    empty = (await _made(http, srv.base, bid, owner, "/columns", {"title": "B"}))["id"]
    card = (await _made(http, srv.base, bid, owner, "/cards", {"column_id": col, "title": "K"}))["id"]
    label = (await _made(http, srv.base, bid, owner, "/labels", {"name": "L", "colour": "red"}))["id"]
    field = await _made(
        http, srv.base, bid, owner, "/fields", {"name": "F", "kind": "select", "options": [{"name": "o"}]}
    )
    option = field["options"][0]["id"]
    cl = (await _made(http, srv.base, bid, owner, f"/cards/{card}/checklists", {"title": "C"}))["id"]
    cl2 = (await _made(http, srv.base, bid, owner, f"/cards/{card}/checklists", {"title": "D"}))["id"]
    item = (await _made(http, srv.base, bid, owner, f"/checklists/{cl}/items", {"text": "I"}))["id"]
    theirs = (await _made(http, srv.base, bid, owner, f"/cards/{card}/comments", {"body": "owner's"}))["id"]

    ws = await WsClient.connect(http, ws_url_with_token(srv.ws_url, people["caller"].access_token), encoding)
    try:
        joined = await ws.join(bid)
        assert joined["type"] == "joined", joined
        seq0 = joined["seq"]
        acked = 0

        async def send(need: str, op: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal acked
            answer = await ws.cmd(bid, op)
            allowed = need in MAY[role] or (need == "delete others" and role == "admin")
            if allowed:
                assert answer["type"] == "ack", (role, op, answer)
                acked += 1
                evs = await ws.wait_seq(bid, answer["seq"])
                return next(e for e in evs if e["seq"] == answer["seq"])["event"]  # type: ignore[no-any-return]
            assert answer["type"] == "error" and answer["code"] == "forbidden", (role, op, answer)
            assert answer["rid"] and answer["board_id"] == bid
            return None

        created = await send("comment", {"op": "comment.create", "card_id": card, "body": "mine"})
        ops: list[tuple[str, dict[str, Any]]] = [
            ("write", {"op": "card.schedule", "card_id": card, "due_ms": 10}),
            ("write", {"op": "card.assign", "card_id": card, "user_id": owner.user_id}),
            ("write", {"op": "card.unassign", "card_id": card, "user_id": owner.user_id}),
            ("write", {"op": "card.add_label", "card_id": card, "label_id": label}),
            ("write", {"op": "card.remove_label", "card_id": card, "label_id": label}),
            ("write", {"op": "card.set_field", "card_id": card, "field_id": field["id"], "value": option}),
            ("write", {"op": "card.set_cover", "card_id": card, "attachment_id": None}),
            ("write", {"op": "column.configure", "column_id": col, "wip_limit": 9}),
            ("write", {"op": "checklist.create", "card_id": card, "title": "X"}),
            ("write", {"op": "checklist.rename", "checklist_id": cl, "title": "Y"}),
            ("write", {"op": "checklist.move", "checklist_id": cl, "after": cl2}),
            ("write", {"op": "item.create", "checklist_id": cl, "text": "Z"}),
            ("write", {"op": "item.update", "item_id": item, "done": True}),
            ("write", {"op": "item.move", "item_id": item, "checklist_id": cl2}),
            ("write", {"op": "card.archive", "card_id": card}),
            ("write", {"op": "card.restore", "card_id": card}),
            ("admin", {"op": "board.configure", "allow_wip_overflow": True}),
            ("admin", {"op": "label.create", "name": "N", "colour": "blue"}),
            ("admin", {"op": "label.update", "label_id": label, "name": "M"}),
            ("admin", {"op": "field.create", "name": "G", "kind": "date"}),
            ("admin", {"op": "field.update", "field_id": field["id"], "name": "H"}),
            ("admin", {"op": "field.add_option", "field_id": field["id"], "name": "p"}),
            ("never", {"op": "comment.edit", "comment_id": theirs, "body": "not mine"}),
            ("delete others", {"op": "comment.delete", "comment_id": theirs}),
            ("write", {"op": "item.delete", "item_id": item}),
            ("write", {"op": "checklist.delete", "checklist_id": cl}),
            ("admin", {"op": "field.remove_option", "field_id": field["id"], "option_id": option}),
            ("admin", {"op": "label.delete", "label_id": label}),
            ("admin", {"op": "field.delete", "field_id": field["id"]}),
            ("write", {"op": "column.archive", "column_id": empty}),
            ("write", {"op": "column.restore", "column_id": empty}),
            ("write", {"op": "column.delete", "column_id": empty}),
            ("write", {"op": "attachment.delete", "attachment_id": str(uuid.uuid4())}),
        ]
        if created is not None:
            mine = created["comment"]["id"]
            ops += [
                ("comment", {"op": "comment.edit", "comment_id": mine, "body": "still mine"}),
                ("comment", {"op": "comment.delete", "comment_id": mine}),
            ]
        for need, op in ops:
            if op["op"] == "attachment.delete" and need in MAY[role]:
                answer = await ws.cmd(bid, op)  # allowed, but there is no such attachment
                assert answer["type"] == "error" and answer["code"] == "not_found", answer
                continue
            if need == "never" and role != "viewer":
                answer = await ws.cmd(bid, op)  # the role may comment, but only authors edit
                assert answer["type"] == "error" and answer["code"] == "forbidden", answer
                continue
            await send(need, op)

        # nobody may send what only the upload route builds
        forged = {"id": str(uuid.uuid4()), "card_id": card, "name": "x", "content_type": "text/plain"}
        forged |= {"size": 1, "blob_key": "k", "created_by": people["caller"].user_id, "created_at_ms": 1}
        answer = await ws.cmd(bid, {"op": "attachment.add", "attachment": forged})
        assert answer["type"] == "error" and answer["code"] == "forbidden", answer
        assert answer["details"]["reason"] == "server_only"

        r = await call(http, "GET", board_url(srv.base, bid), owner)
        assert r.body["seq"] == seq0 + acked  # every refusal changed nothing
        assert (acked == 0) == (role == "viewer")
    finally:
        await ws.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_commenter_by_invitation_comments_and_is_assignable_once_a_member(
    http, start_server, encoding
):
    """The board reads its members again on every membership change (never per command): a
    member who joins an active board can be assigned and mentioned at once."""
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "newcomer")
    owner, newcomer = people["owner"], people["newcomer"]
    bid = await board_with_roles(http, srv.base, {"owner": owner})
    col = (await _made(http, srv.base, bid, owner, "/columns", {"title": "A"}))["id"]
    card = (await _made(http, srv.base, bid, owner, "/cards", {"column_id": col, "title": "K"}))["id"]
    o = await WsClient.connect(http, ws_url_with_token(srv.ws_url, owner.access_token), encoding)
    n: WsClient | None = None
    try:
        await o.join(bid)  # the board is active from here on
        refused = await o.cmd(bid, {"op": "card.assign", "card_id": card, "user_id": newcomer.user_id})
        assert refused["type"] == "error" and refused["code"] == "bad_request", refused

        inv = await _made(http, srv.base, bid, owner, "/invitations", {"role": "commenter"})
        assert inv["role"] == "commenter"
        r = await call(
            http, "POST", f"{srv.base}/api/v1/invitations/accept", newcomer, json={"token": inv["token"]}
        )
        assert r.status == 200 and r.body["role"] == "commenter", r.body

        assigned = await o.cmd(bid, {"op": "card.assign", "card_id": card, "user_id": newcomer.user_id})
        assert assigned["type"] == "ack", assigned
        n = await WsClient.connect(http, ws_url_with_token(srv.ws_url, newcomer.access_token), encoding)
        await n.join(bid)
        ann = (await call(http, "GET", f"{srv.base}/api/v1/users/me", newcomer)).body["name"]
        said = await n.cmd(
            bid, {"op": "comment.create", "card_id": card, "body": f"thanks @{ann.replace(' ', '')}"}
        )
        assert said["type"] == "ack", said
        evs = await n.wait_seq(bid, said["seq"])
        assert evs[-1]["event"]["comment"]["mentions"] == [newcomer.user_id]
        moved = await n.cmd(bid, {"op": "card.archive", "card_id": card})
        assert moved["type"] == "error" and moved["code"] == "forbidden", moved
    finally:
        await o.close()
        if n is not None:
            await n.close()


async def test_the_author_rule_holds_for_viewers_on_another_node(http, start_server):
    """A comment's author decides whether deleting it is comment or admin work, also when the
    connection is on a node other than the board's owner (its grant travels with the command)."""
    a = await start_server(auth="jwt")
    b = await start_server(auth="jwt")
    people = await accounts(http, a.base, "owner", "admin", "member")
    owner = people["owner"]
    bid = await board_with_roles(http, a.base, people)
    col = (await _made(http, a.base, bid, owner, "/columns", {"title": "A"}))["id"]  # owned by a
    card = (await _made(http, a.base, bid, owner, "/cards", {"column_id": col, "title": "K"}))["id"]
    theirs = (await _made(http, a.base, bid, owner, f"/cards/{card}/comments", {"body": "owner's"}))["id"]
    clients = {
        name: await WsClient.connect(http, ws_url_with_token(b.ws_url, people[name].access_token), "msgpack")
        for name in ("admin", "member")
    }
    try:
        for c in clients.values():
            assert (await c.join(bid))["type"] == "joined"
        m = clients["member"]
        mine = await m.cmd(bid, {"op": "comment.create", "card_id": card, "body": "member's"})
        assert mine["type"] == "ack", mine
        mine_id = next(e for e in await m.wait_seq(bid, mine["seq"]) if e["seq"] == mine["seq"])["event"]
        refused = await m.cmd(bid, {"op": "comment.delete", "comment_id": theirs})
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        own = await m.cmd(bid, {"op": "comment.delete", "comment_id": mine_id["comment"]["id"]})
        assert own["type"] == "ack", own
        moderated = await clients["admin"].cmd(bid, {"op": "comment.delete", "comment_id": theirs})
        assert moderated["type"] == "ack", moderated
    finally:
        for c in clients.values():
            await c.close()
