"""Board access over REST (docs/ACCESS.md): what each role may do, what someone without access
sees (exactly what they would see for a board that does not exist), and `signed_in` boards."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import aiohttp
import pytest

from tests.identity import Account
from tests.roles import (
    Reply,
    accounts,
    assert_error,
    assert_unauthorized,
    board_url,
    board_with_roles,
    call,
    set_visibility,
)

CALLERS = ("owner", "admin", "member", "commenter", "viewer", "outsider", "anonymous")


@dataclasses.dataclass(frozen=True)
class Ids:
    """What one action names: the board, things in it, and people."""

    board: str
    column: str
    column2: str
    card: str
    invitation: str
    target: str  # a member (role member) that member management acts on
    spare: str  # a signed-in account that is not a member
    caller: str  # the caller's own user id
    label: str = ""
    field: str = ""  # a select field
    option: str = ""  # its option
    checklist: str = ""  # on the card
    item: str = ""  # in the checklist
    comment: str = ""  # the owner's, on the card


@dataclasses.dataclass(frozen=True)
class Row:
    action: str
    method: str
    path: str  # after /api/v1/boards/{board}; {column}, {card}... from Ids
    expect: dict[str, int]  # caller -> status

    @property
    def reads(self) -> bool:
        return self.method == "GET"

    def url(self, base: str, ids: Ids) -> str:
        return board_url(base, ids.board, self.path.format(**dataclasses.asdict(ids)))

    def json(self, ids: Ids) -> Any:
        body = BODIES.get(self.action)
        if body is None:
            return None
        return _fill(body, dataclasses.asdict(ids))


def _fill(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**fields)
    if isinstance(value, dict):
        return {k: _fill(v, fields) for k, v in value.items()}
    return value


def _row(action: str, route: str, *statuses: int) -> Row:
    method, _, path = route.partition(" ")
    return Row(action, method, path, dict(zip(CALLERS, statuses, strict=True)))


# fmt: off
TABLE = [
    # action, route; then owner admin member commenter viewer outsider anonymous
    _row("read board",        "GET ",                              200, 200, 200, 200, 200, 404, 401),
    _row("list columns",      "GET /columns",                      200, 200, 200, 200, 200, 404, 401),
    _row("read column",       "GET /columns/{column}",             200, 200, 200, 200, 200, 404, 401),
    _row("list cards",        "GET /cards",                        200, 200, 200, 200, 200, 404, 401),
    _row("read card",         "GET /cards/{card}",                 200, 200, 200, 200, 200, 404, 401),
    _row("list members",      "GET /members",                      200, 200, 200, 200, 200, 404, 401),
    _row("list labels",       "GET /labels",                       200, 200, 200, 200, 200, 404, 401),
    _row("list fields",       "GET /fields",                       200, 200, 200, 200, 200, 404, 401),
    _row("list comments",     "GET /cards/{card}/comments",        200, 200, 200, 200, 200, 404, 401),
    _row("create column",     "POST /columns",                     201, 201, 201, 403, 403, 404, 401),
    _row("rename column",     "PATCH /columns/{column}",           200, 200, 200, 403, 403, 404, 401),
    _row("move column",       "POST /columns/{column}/move",       200, 200, 200, 403, 403, 404, 401),
    _row("delete column",     "DELETE /columns/{column}?cards=delete", 204, 204, 204, 403, 403, 404, 401),
    _row("column settings",   "PATCH /columns/{column}/settings",  200, 200, 200, 403, 403, 404, 401),
    _row("archive column",    "POST /columns/{column}/archive",    200, 200, 200, 403, 403, 404, 401),
    _row("create card",       "POST /cards",                       201, 201, 201, 403, 403, 404, 401),
    _row("patch card",        "PATCH /cards/{card}",               200, 200, 200, 403, 403, 404, 401),
    _row("move card",         "POST /cards/{card}/move",           200, 200, 200, 403, 403, 404, 401),
    _row("delete card",       "DELETE /cards/{card}",              204, 204, 204, 403, 403, 404, 401),
    _row("schedule card",     "PATCH /cards/{card}/schedule",      200, 200, 200, 403, 403, 404, 401),
    _row("assign card",       "POST /cards/{card}/assignees",      200, 200, 200, 403, 403, 404, 401),
    _row("unassign card",     "DELETE /cards/{card}/assignees/{target}", 200, 200, 200, 403, 403, 404, 401),
    _row("archive card",      "POST /cards/{card}/archive",        200, 200, 200, 403, 403, 404, 401),
    _row("label card",        "PUT /cards/{card}/labels/{label}",  200, 200, 200, 403, 403, 404, 401),
    _row("unlabel card",      "DELETE /cards/{card}/labels/{label}", 200, 200, 200, 403, 403, 404, 401),
    _row("set field",         "PUT /cards/{card}/fields/{field}",  200, 200, 200, 403, 403, 404, 401),
    _row("create checklist",  "POST /cards/{card}/checklists",     201, 201, 201, 403, 403, 404, 401),
    _row("rename checklist",  "PATCH /checklists/{checklist}",     200, 200, 200, 403, 403, 404, 401),
    _row("move checklist",    "POST /checklists/{checklist}/move", 200, 200, 200, 403, 403, 404, 401),
    _row("delete checklist",  "DELETE /checklists/{checklist}",    204, 204, 204, 403, 403, 404, 401),
    _row("create item",       "POST /checklists/{checklist}/items", 201, 201, 201, 403, 403, 404, 401),
    _row("patch item",        "PATCH /items/{item}",               200, 200, 200, 403, 403, 404, 401),
    _row("move item",         "POST /items/{item}/move",           200, 200, 200, 403, 403, 404, 401),
    _row("delete item",       "DELETE /items/{item}",              204, 204, 204, 403, 403, 404, 401),
    _row("comment",           "POST /cards/{card}/comments",       201, 201, 201, 201, 403, 404, 401),
    _row("edit owner's comment", "PATCH /comments/{comment}",      200, 403, 403, 403, 403, 404, 401),
    _row("delete owner's comment", "DELETE /comments/{comment}",   204, 204, 403, 403, 403, 404, 401),
    _row("command: archive",  "POST /commands",                    200, 200, 200, 403, 403, 404, 401),
    _row("command: comment",  "POST /commands",                    200, 200, 200, 200, 403, 404, 401),
    _row("board settings",    "PUT /settings",                     204, 204, 403, 403, 403, 404, 401),
    _row("create label",      "POST /labels",                      201, 201, 403, 403, 403, 404, 401),
    _row("patch label",       "PATCH /labels/{label}",             200, 200, 403, 403, 403, 404, 401),
    _row("delete label",      "DELETE /labels/{label}",            204, 204, 403, 403, 403, 404, 401),
    _row("create field",      "POST /fields",                      201, 201, 403, 403, 403, 404, 401),
    _row("rename field",      "PATCH /fields/{field}",             200, 200, 403, 403, 403, 404, 401),
    _row("add option",        "POST /fields/{field}/options",      201, 201, 403, 403, 403, 404, 401),
    _row("remove option",     "DELETE /fields/{field}/options/{option}", 204, 204, 403, 403, 403, 404, 401),
    _row("delete field",      "DELETE /fields/{field}",            204, 204, 403, 403, 403, 404, 401),
    _row("patch title",       "PATCH ",                            200, 200, 403, 403, 403, 404, 401),
    _row("patch description", "PATCH ",                            200, 200, 403, 403, 403, 404, 401),
    _row("patch visibility",  "PATCH ",                            200, 200, 403, 403, 403, 404, 401),
    _row("add member",        "POST /members",                     201, 201, 403, 403, 403, 404, 401),
    _row("change role",       "PATCH /members/{target}",           200, 200, 403, 403, 403, 404, 401),
    _row("remove member",     "DELETE /members/{target}",          204, 204, 403, 403, 403, 404, 401),
    _row("remove self",       "DELETE /members/{caller}",          409, 204, 204, 204, 204, 404, 401),
    _row("leave",             "POST /leave",                       409, 204, 204, 204, 204, 404, 401),
    _row("list invitations",  "GET /invitations",                  200, 200, 403, 403, 403, 404, 401),
    _row("create invitation", "POST /invitations",                 201, 201, 403, 403, 403, 404, 401),
    _row("revoke invitation", "DELETE /invitations/{invitation}",  204, 204, 403, 403, 403, 404, 401),
    _row("transfer",          "POST /transfer",                    204, 403, 403, 403, 403, 404, 401),
    _row("delete board",      "DELETE ",                           204, 403, 403, 403, 403, 404, 401),
]
# fmt: on

BODIES: dict[str, dict[str, Any]] = {
    "create column": {"title": "New"},
    "rename column": {"title": "Renamed"},
    "move column": {},
    "column settings": {"wip_limit": 5},
    "create card": {"column_id": "{column}", "title": "C"},
    "patch card": {"title": "Patched"},
    "move card": {"column_id": "{column2}"},
    "schedule card": {"done": True},
    "assign card": {"user_id": "{target}"},
    "set field": {"value": "{option}"},
    "create checklist": {"title": "C"},
    "rename checklist": {"title": "R"},
    "move checklist": {},
    "create item": {"text": "I"},
    "patch item": {"done": True},
    "move item": {"checklist_id": "{checklist}"},
    "comment": {"body": "hello"},
    "edit owner's comment": {"body": "rewritten"},
    "command: archive": {"op": {"op": "card.archive", "card_id": "{card}"}},
    "command: comment": {"op": {"op": "comment.create", "card_id": "{card}", "body": "hi"}},
    "board settings": {"allow_wip_overflow": True},
    "create label": {"name": "L", "colour": "red"},
    "patch label": {"name": "M"},
    "create field": {"name": "F", "kind": "text"},
    "rename field": {"name": "G"},
    "add option": {"name": "Low"},
    "patch title": {"title": "Retitled"},
    "patch description": {"description": "About"},
    "patch visibility": {"visibility": "signed_in"},
    "add member": {"user_id": "{spare}", "role": "viewer"},
    "change role": {"role": "viewer"},
    "create invitation": {},
    "transfer": {"user_id": "{target}"},
}

CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}


async def _people(http: aiohttp.ClientSession, base: str) -> dict[str, Account]:
    return await accounts(
        http, base, "owner", "admin", "member", "commenter", "viewer", "outsider", "target", "spare"
    )


async def _furnished_board(http: aiohttp.ClientSession, base: str, people: dict[str, Account]) -> Ids:
    """A private board with every role, a target member, two columns, a card and an invitation."""
    owner = people["owner"]
    extra = {"commenter": "commenter"} if "commenter" in people else {}
    bid = await board_with_roles(http, base, people, target="member", **extra)
    cols = []
    for title in ("A", "B"):
        r = await call(http, "POST", board_url(base, bid, "/columns"), owner, json={"title": title})
        assert r.status == 201, r.body
        cols.append(r.body["id"])
    r = await call(
        http, "POST", board_url(base, bid, "/cards"), owner, json={"column_id": cols[0], "title": "K"}
    )
    assert r.status == 201, r.body
    card = r.body["id"]
    model = await _model_parts(http, base, bid, owner, card)
    r = await call(http, "POST", board_url(base, bid, "/invitations"), owner, json={})
    assert r.status == 201, r.body
    return Ids(
        **model,
        board=bid,
        column=cols[0],
        column2=cols[1],
        card=card,
        invitation=r.body["id"],
        target=people["target"].user_id,
        spare=people["spare"].user_id,
        caller="",
    )


async def _model_parts(
    http: aiohttp.ClientSession, base: str, bid: str, owner: Account, card: str
) -> dict[str, str]:
    """A label, a select field with an option, a checklist with an item and the owner's comment."""

    async def made(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await call(http, "POST", board_url(base, bid, path), owner, json=body)
        assert r.status == 201, r.body
        return r.body  # type: ignore[no-any-return]

    label = await made("/labels", {"name": "Bug", "colour": "red"})
    field = await made("/fields", {"name": "Prio", "kind": "select", "options": [{"name": "High"}]})
    checklist = await made(f"/cards/{card}/checklists", {"title": "C"})
    item = await made(f"/checklists/{checklist['id']}/items", {"text": "I"})
    comment = await made(f"/cards/{card}/comments", {"body": "the owner's"})
    return {
        "label": label["id"],
        "field": field["id"],
        "option": field["options"][0]["id"],
        "checklist": checklist["id"],
        "item": item["id"],
        "comment": comment["id"],
    }


async def _fingerprint(
    http: aiohttp.ClientSession, base: str, bid: str, owner: Account, outsider: Account
) -> tuple[Any, ...]:
    """Everything a refused request must leave alone, as the owner (and an outsider) see it."""
    snapshot = await call(http, "GET", board_url(base, bid), owner)
    members = await call(http, "GET", board_url(base, bid, "/members"), owner)
    invitations = await call(http, "GET", board_url(base, bid, "/invitations"), owner)
    seen_by_outsider = await call(http, "GET", board_url(base, bid), outsider)
    return (
        snapshot.status,
        snapshot.body,
        members.status,
        sorted(json.dumps(m, sort_keys=True) for m in (members.body or {}).get("members", [])),
        invitations.status,
        sorted(json.dumps(i, sort_keys=True) for i in (invitations.body or {}).get("invitations", [])),
        seen_by_outsider.status,
    )


def _check_refusal(reply: Reply, expected: int, bid: str) -> None:
    if expected == 401:
        assert_unauthorized(reply)
        return
    err = assert_error(reply, expected, CODES[expected])
    if expected == 404:
        assert err.get("details") == {"board": bid}, err


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_role_against_every_action(http, start_server, caller):
    srv = await start_server(auth="jwt")
    base = srv.base
    people = await _people(http, base)
    who = people.get(caller)  # None: anonymous
    caller_id = who.user_id if who else str(uuid.uuid4())
    shared = dataclasses.replace(await _furnished_board(http, base, people), caller=caller_id)
    failures: list[str] = []

    for row in TABLE:
        expected = row.expect[caller]
        # reads share one board; every change gets a board of its own
        ids = (
            shared
            if row.reads
            else dataclasses.replace(await _furnished_board(http, base, people), caller=caller_id)
        )
        before = await _fingerprint(http, base, ids.board, people["owner"], people["outsider"])
        reply = await call(http, row.method, row.url(base, ids), who, json=row.json(ids))
        after = await _fingerprint(http, base, ids.board, people["owner"], people["outsider"])
        if reply.status != expected:
            failures.append(f"{caller} / {row.action}: expected {expected}, got {reply.status} {reply.body}")
            continue
        if expected >= 400:
            try:
                _check_refusal(reply, expected, ids.board)
            except AssertionError as e:
                failures.append(f"{caller} / {row.action}: bad error answer: {e}")
            if after != before:
                failures.append(f"{caller} / {row.action}: refused with {expected} but the board changed")
        elif not row.reads and after == before:
            failures.append(f"{caller} / {row.action}: answered {expected} but nothing changed")

    assert not failures, "\n".join(failures)


async def test_successful_actions_do_what_they_say(http, start_server):
    """A few successes from the table, checked for their effect rather than their status."""
    srv = await start_server(auth="jwt")
    base = srv.base
    people = await _people(http, base)
    owner, admin, member = people["owner"], people["admin"], people["member"]

    ids = await _furnished_board(http, base, people)
    r = await call(http, "POST", board_url(base, ids.board, "/transfer"), owner, json={"user_id": ids.target})
    assert r.status == 204 and r.body is None
    roles = {
        m["user_id"]: m["role"]
        for m in (await call(http, "GET", board_url(base, ids.board, "/members"), admin)).body["members"]
    }
    assert roles[ids.target] == "owner" and roles[owner.user_id] == "admin"

    ids = await _furnished_board(http, base, people)
    assert (await call(http, "POST", board_url(base, ids.board, "/leave"), member)).status == 204
    assert_error(await call(http, "GET", board_url(base, ids.board), member), 404, "not_found")
    assert_error(await call(http, "POST", board_url(base, ids.board, "/leave"), member), 404, "not_found")

    ids = await _furnished_board(http, base, people)
    assert (await call(http, "DELETE", board_url(base, ids.board), owner)).status == 204
    # Its former members are told it was deleted; anyone else learns nothing.
    for who in (owner, admin, member):
        err = assert_error(await call(http, "GET", board_url(base, ids.board), who), 410, "gone")
        assert err["details"]["board_id"] == ids.board and err["details"]["seq"] > 0
    outsider = await call(http, "GET", board_url(base, ids.board), people["outsider"])
    err = assert_error(outsider, 404, "not_found")
    assert err["details"] == {"board": ids.board}


def _normalised(reply: Reply, board_id: str) -> str:
    """The answer with its request id dropped and the board id replaced by a placeholder."""
    assert isinstance(reply.body, dict) and "error" in reply.body, (reply.status, reply.body)
    err = {k: v for k, v in reply.body["error"].items() if k != "request_id"}
    return json.dumps({"status": reply.status, "error": err}, sort_keys=True).replace(board_id, "<board>")


async def test_another_boards_things_are_indistinguishable_from_nothing(http, start_server):
    """Alice owns board A; Bob's private board B is, to her, exactly a board that does not exist."""
    srv = await start_server(auth="jwt")
    base = srv.base
    people = await _people(http, base)
    alice, bob = people["outsider"], people["owner"]  # bob owns the furnished board B
    b = dataclasses.replace(await _furnished_board(http, base, people), caller=alice.user_id)
    missing = dataclasses.replace(b, board=str(uuid.uuid4()))
    before = await _fingerprint(http, base, b.board, bob, people["spare"])

    # alice has every right on a board of her own, which is no help on B
    a_people = {
        "owner": alice,
        "admin": people["spare"],
        "target": people["target"],
        "spare": people["viewer"],
    }
    a = await _furnished_board(http, base, a_people)

    failures: list[str] = []
    for row in TABLE:
        on_b = await call(http, row.method, row.url(base, b), alice, json=row.json(b))
        on_missing = await call(http, row.method, row.url(base, missing), alice, json=row.json(missing))
        try:
            err = assert_error(on_b, 404, "not_found")
            assert err.get("details") == {"board": b.board}, err
            assert_error(on_missing, 404, "not_found")
            assert _normalised(on_b, b.board) == _normalised(on_missing, missing.board)
        except AssertionError as e:
            failures.append(f"{row.action}: {e}")
    assert not failures, "\n".join(failures)

    # B's columns, cards, invitations and members through A's URLs: not found either
    through_a: list[tuple[str, str, dict[str, Any] | None, dict[str, str] | None]] = [
        ("GET", f"/columns/{b.column}", None, {"column": b.column}),
        ("PATCH", f"/columns/{b.column}", {"title": "Stolen"}, {"column": b.column}),
        ("POST", f"/columns/{b.column}/move", {}, {"column": b.column}),
        ("DELETE", f"/columns/{b.column}", None, {"column": b.column}),
        ("POST", "/columns", {"title": "X", "after": b.column}, {"column": b.column}),
        ("GET", f"/cards/{b.card}", None, {"card": b.card}),
        ("PATCH", f"/cards/{b.card}", {"title": "Stolen"}, {"card": b.card}),
        ("POST", f"/cards/{b.card}/move", {"column_id": a.column}, {"card": b.card}),
        ("DELETE", f"/cards/{b.card}", None, {"card": b.card}),
        ("POST", "/cards", {"column_id": b.column, "title": "X"}, {"column": b.column}),
        ("POST", f"/cards/{a.card}/move", {"column_id": b.column}, {"column": b.column}),
        ("POST", f"/cards/{a.card}/move", {"column_id": a.column, "after": b.card}, {"card": b.card}),
        ("DELETE", f"/invitations/{b.invitation}", None, None),
        ("PATCH", f"/members/{bob.user_id}", {"role": "viewer"}, None),
        ("DELETE", f"/members/{bob.user_id}", None, None),
    ]
    for method, path, body, details in through_a:
        reply = await call(http, method, board_url(base, a.board, path), alice, json=body)
        try:
            err = assert_error(reply, 404, "not_found")
            if details is not None:
                assert err.get("details") == details, err
        except AssertionError as e:
            failures.append(f"{method} A{path}: {e}")
    listed = await call(
        http, "GET", board_url(base, a.board, "/cards"), alice, params={"column_id": b.column}
    )
    if listed.status == 200:
        if listed.body["cards"]:
            failures.append(f"A's cards filtered by B's column leak B's cards: {listed.body}")
    elif listed.status != 404:
        failures.append(f"A's cards filtered by B's column: {listed.status} {listed.body}")
    assert not failures, "\n".join(failures)

    assert await _fingerprint(http, base, b.board, bob, people["spare"]) == before


async def test_signed_in_boards_are_readable_by_everyone_signed_in_as_a_viewer(http, start_server):
    srv = await start_server(auth="jwt")
    base = srv.base
    people = await _people(http, base)
    owner, outsider = people["owner"], people["outsider"]
    ids = dataclasses.replace(await _furnished_board(http, base, people), caller=outsider.user_id)

    # private (the default): nothing to see
    assert_error(await call(http, "GET", board_url(base, ids.board), outsider), 404, "not_found")

    await set_visibility(http, base, ids.board, owner, "signed_in")
    failures: list[str] = []
    for row in TABLE:
        if row.action in ("remove self", "leave"):
            continue  # not a member: nothing to leave
        before = await _fingerprint(http, base, ids.board, owner, people["spare"])
        reply = await call(http, row.method, row.url(base, ids), outsider, json=row.json(ids))
        expected = 200 if row.reads and row.expect["viewer"] == 200 else 403
        try:
            if expected == 200:
                assert reply.status == 200, (reply.status, reply.body)
            else:
                assert_error(reply, 403, "forbidden")
            assert await _fingerprint(http, base, ids.board, owner, people["spare"]) == before
        except AssertionError as e:
            failures.append(f"signed-in non-member / {row.action}: {e}")
    assert not failures, "\n".join(failures)

    # what a viewer reads: the board itself
    snap = await call(http, "GET", board_url(base, ids.board), outsider)
    assert snap.body["id"] == ids.board and [c["id"] for c in snap.body["columns"]] == [
        ids.column,
        ids.column2,
    ]
    members = await call(http, "GET", board_url(base, ids.board, "/members"), outsider)
    assert outsider.user_id not in {m["user_id"] for m in members.body["members"]}
    assert all("email" not in m for m in members.body["members"]), members.body

    # still nothing for anonymous callers
    assert_unauthorized(await call(http, "GET", board_url(base, ids.board)))

    await set_visibility(http, base, ids.board, owner, "private")
    for row in TABLE:
        if row.reads:
            reply = await call(http, row.method, row.url(base, ids), outsider)
            err = assert_error(reply, 404, "not_found")
            assert err["details"] == {"board": ids.board}


async def test_a_signed_in_board_does_not_lift_a_members_role(http, start_server):
    """Visibility grants viewing to strangers; a member of the board keeps exactly their role."""
    srv = await start_server(auth="jwt")
    base = srv.base
    people = await accounts(http, base, "owner", "viewer", "member")
    bid = await board_with_roles(http, base, people)
    await set_visibility(http, base, bid, people["owner"], "signed_in")
    assert_error(
        await call(http, "POST", board_url(base, bid, "/columns"), people["viewer"], json={"title": "X"}),
        403,
        "forbidden",
    )
    r = await call(http, "POST", board_url(base, bid, "/columns"), people["member"], json={"title": "Y"})
    assert r.status == 201, r.body
    assert_error(
        await call(http, "PATCH", board_url(base, bid), people["member"], json={"visibility": "private"}),
        403,
        "forbidden",
    )


async def test_development_mode_is_unaffected(http, start_server):
    """With BOARDCAST_AUTH=none the development user owns what it creates, no token needed."""
    srv = await start_server()
    r = await call(http, "POST", f"{srv.base}/api/v1/boards", json={"title": "Dev"})
    assert r.status == 201 and r.body["role"] == "owner"
    assert (await call(http, "GET", board_url(srv.base, r.body["id"]))).status == 200
