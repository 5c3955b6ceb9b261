"""Board invitations over REST (docs/ACCESS.md, "Invitations"): creating, listing, revoking and
accepting them, their limits (uses, expiry), and who may invite whom."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from typing import Any

import aiohttp

from tests.identity import Account
from tests.roles import (
    API,
    Reply,
    accounts,
    assert_error,
    assert_unauthorized,
    board_url,
    board_with_roles,
    call,
    member_roles,
)

INVITATION_FIELDS = {"id", "token", "role", "expires_at", "max_uses", "uses", "created_at"}
DAY_S = 86400


async def _invite(
    http: aiohttp.ClientSession, base: str, bid: str, who: Account, **body: Any
) -> dict[str, Any]:
    r = await call(http, "POST", board_url(base, bid, "/invitations"), who, json=body)
    assert r.status == 201, r.body
    assert isinstance(r.body, dict)
    return r.body


async def _accept(http: aiohttp.ClientSession, base: str, who: Account | None, token: str) -> Reply:
    return await call(http, "POST", f"{base}{API}/invitations/accept", who, json={"token": token})


async def _listed(
    http: aiohttp.ClientSession, base: str, bid: str, who: Account
) -> dict[str, dict[str, Any]]:
    """invitation id -> invitation, as GET .../invitations lists them."""
    r = await call(http, "GET", board_url(base, bid, "/invitations"), who)
    assert r.status == 200, r.body
    assert set(r.body) == {"invitations"}
    return {i["id"]: i for i in r.body["invitations"]}


def _instant(value: Any) -> datetime.datetime:
    """A timestamp as the API writes it: an ISO 8601 string, or a number since the epoch."""
    if isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value)
        assert parsed.tzinfo is not None, f"timestamp without a time zone: {value}"
        return parsed
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    seconds = value / 1000 if value > 10**11 else value
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def _lifetime_s(invitation: dict[str, Any]) -> float:
    return (_instant(invitation["expires_at"]) - _instant(invitation["created_at"])).total_seconds()


async def test_creating_and_listing_invitations(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "member", "viewer", "outsider")
    owner, admin = people["owner"], people["admin"]
    bid = await board_with_roles(http, srv.base, people)  # the outsider is left out

    first = await _invite(http, srv.base, bid, owner)
    assert set(first) == INVITATION_FIELDS, first
    assert (first["role"], first["max_uses"], first["uses"]) == ("member", 1, 0)
    assert isinstance(first["token"], str) and len(first["token"]) >= 16
    assert abs(_lifetime_s(first) - 7 * DAY_S) < 60, first
    now = datetime.datetime.now(datetime.UTC)
    assert abs((_instant(first["created_at"]) - now).total_seconds()) < 60, first

    second = await _invite(http, srv.base, bid, admin, role="viewer", max_uses=5, expires_in_s=3600)
    assert (second["role"], second["max_uses"], second["uses"]) == ("viewer", 5, 0)
    assert abs(_lifetime_s(second) - 3600) < 60, second
    assert second["token"] != first["token"] and second["id"] != first["id"]

    for who in (owner, admin):
        listed = await _listed(http, srv.base, bid, who)
        assert set(listed) == {first["id"], second["id"]}
        for inv in (first, second):
            shown = listed[inv["id"]]
            assert "token" not in shown, shown
            assert inv["token"] not in json.dumps(shown)
            assert {k: shown[k] for k in ("role", "max_uses", "uses")} == {
                k: inv[k] for k in ("role", "max_uses", "uses")
            }
            assert _instant(shown["expires_at"]) == _instant(inv["expires_at"])

    url = board_url(srv.base, bid, "/invitations")
    for role in ("member", "viewer"):
        assert_error(await call(http, "GET", url, people[role]), 403, "forbidden")
        assert_error(await call(http, "POST", url, people[role], json={}), 403, "forbidden")
    err = assert_error(await call(http, "GET", url, people["outsider"]), 404, "not_found")
    assert err["details"] == {"board": bid}
    assert_unauthorized(await call(http, "GET", url))
    assert set(await _listed(http, srv.base, bid, owner)) == {first["id"], second["id"]}


async def test_accepting_adds_a_membership_with_the_invited_role(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "ann", "ben", "cid")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, {"owner": owner}, title="Invited to")

    for name, role in (("ann", "admin"), ("ben", "member"), ("cid", "viewer")):
        who = people[name]
        inv = await _invite(http, srv.base, bid, owner, role=role)
        assert_error(await call(http, "GET", board_url(srv.base, bid), who), 404, "not_found")
        r = await _accept(http, srv.base, who, inv["token"])
        assert r.status == 200, r.body
        assert r.body["id"] == bid and r.body["role"] == role and r.body["title"] == "Invited to", r.body
        assert (await call(http, "GET", board_url(srv.base, bid), who)).status == 200
        assert (await _listed(http, srv.base, bid, owner))[inv["id"]]["uses"] == 1
        boards = await call(http, "GET", f"{srv.base}{API}/boards", who)
        assert {b["id"]: b["role"] for b in boards.body["boards"]} == {bid: role}

    assert await member_roles(http, srv.base, bid, owner) == {
        owner.user_id: "owner",
        people["ann"].user_id: "admin",
        people["ben"].user_id: "member",
        people["cid"].user_id: "viewer",
    }

    # what an invited member may do follows the invited role
    cols = board_url(srv.base, bid, "/columns")
    assert (await call(http, "POST", cols, people["ben"], json={"title": "x"})).status == 201
    assert_error(await call(http, "POST", cols, people["cid"], json={"title": "y"}), 403, "forbidden")


async def test_bad_accepts(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "ann")
    bid = await board_with_roles(http, srv.base, {"owner": people["owner"]})
    inv = await _invite(http, srv.base, bid, people["owner"])

    assert_unauthorized(await _accept(http, srv.base, None, inv["token"]))
    assert_error(await _accept(http, srv.base, people["ann"], "bci_" + uuid.uuid4().hex), 404, "not_found")
    assert_error(await _accept(http, srv.base, people["ann"], inv["token"] + "x"), 404, "not_found")
    url = f"{srv.base}{API}/invitations/accept"
    for body in ({}, {"token": 5}, {"token": inv["token"], "extra": True}):
        assert_error(await call(http, "POST", url, people["ann"], json=body), 400, "bad_request")
    # none of that used the invitation or let anyone in
    assert (await _listed(http, srv.base, bid, people["owner"]))[inv["id"]]["uses"] == 0
    assert await member_roles(http, srv.base, bid, people["owner"]) == {people["owner"].user_id: "owner"}


async def test_a_revoked_invitation_is_gone_from_the_list_and_cannot_be_accepted(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "ann")
    owner, admin, ann = people.values()
    bid = await board_with_roles(http, srv.base, {"owner": owner, "admin": admin})
    kept = await _invite(http, srv.base, bid, owner)
    revoked = await _invite(http, srv.base, bid, owner, max_uses=10)

    r = await call(http, "DELETE", board_url(srv.base, bid, f"/invitations/{revoked['id']}"), admin)
    assert r.status == 204 and r.body is None
    assert set(await _listed(http, srv.base, bid, owner)) == {kept["id"]}
    assert_error(await _accept(http, srv.base, ann, revoked["token"]), 404, "not_found")
    assert ann.user_id not in await member_roles(http, srv.base, bid, owner)
    assert_error(
        await call(http, "DELETE", board_url(srv.base, bid, f"/invitations/{uuid.uuid4()}"), owner),
        404,
        "not_found",
    )
    # the other one still works
    assert (await _accept(http, srv.base, ann, kept["token"])).status == 200


async def test_max_uses_is_enforced(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "ann", "ben", "cid")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, {"owner": owner})
    inv = await _invite(http, srv.base, bid, owner, max_uses=2, role="viewer")

    for name in ("ann", "ben"):
        r = await _accept(http, srv.base, people[name], inv["token"])
        assert r.status == 200 and r.body["role"] == "viewer", r.body
    assert_error(await _accept(http, srv.base, people["cid"], inv["token"]), 410, "gone")
    assert people["cid"].user_id not in await member_roles(http, srv.base, bid, owner)
    listed = (await _listed(http, srv.base, bid, owner))[inv["id"]]  # used up, not revoked: still listed
    assert (listed["uses"], listed["max_uses"]) == (2, 2)


async def test_concurrent_accepts_do_not_exceed_max_uses(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "ann", "ben", "cid", "dan")
    owner, *guests = people.values()
    bid = await board_with_roles(http, srv.base, {"owner": owner})
    inv = await _invite(http, srv.base, bid, owner, max_uses=2)

    replies = await asyncio.gather(*(_accept(http, srv.base, g, inv["token"]) for g in guests))
    assert sorted(r.status for r in replies) == [200, 200, 410, 410], [(r.status, r.body) for r in replies]
    accepted = {g.user_id for g, r in zip(guests, replies, strict=True) if r.status == 200}
    roles = await member_roles(http, srv.base, bid, owner)
    assert set(roles) - {owner.user_id} == accepted
    assert (await _listed(http, srv.base, bid, owner))[inv["id"]]["uses"] == 2


async def test_an_expired_invitation_is_gone(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "ann")
    owner, ann = people["owner"], people["ann"]
    bid = await board_with_roles(http, srv.base, {"owner": owner})
    inv = await _invite(http, srv.base, bid, owner, expires_in_s=1)
    assert _lifetime_s(inv) <= 2, inv

    await asyncio.sleep(1.5)  # the only way to let a real invitation expire
    assert_error(await _accept(http, srv.base, ann, inv["token"]), 410, "gone")
    assert ann.user_id not in await member_roles(http, srv.base, bid, owner)
    assert (await _listed(http, srv.base, bid, owner))[inv["id"]]["uses"] == 0


async def test_accepting_as_a_member_never_demotes_and_uses_the_invitation_only_to_raise(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "viewer", "newcomer", "latecomer")
    owner, admin, viewer, newcomer, latecomer = people.values()
    bid = await board_with_roles(http, srv.base, {"owner": owner, "admin": admin, "viewer": viewer})

    # an admin and the owner accepting a viewer invitation: nothing changes, nothing used
    low = await _invite(http, srv.base, bid, owner, role="viewer")
    for who, role in ((admin, "admin"), (owner, "owner")):
        r = await _accept(http, srv.base, who, low["token"])
        assert r.status == 200 and r.body["id"] == bid and r.body["role"] == role, r.body
    assert (await _listed(http, srv.base, bid, owner))[low["id"]]["uses"] == 0
    r = await _accept(http, srv.base, newcomer, low["token"])  # its one use is still there
    assert r.status == 200 and r.body["role"] == "viewer", r.body
    assert (await _listed(http, srv.base, bid, owner))[low["id"]]["uses"] == 1

    # a viewer accepting a member invitation is raised, and that uses it
    up = await _invite(http, srv.base, bid, owner, role="member")
    r = await _accept(http, srv.base, viewer, up["token"])
    assert r.status == 200 and r.body["role"] == "member", r.body
    assert (await _listed(http, srv.base, bid, owner))[up["id"]]["uses"] == 1
    assert_error(await _accept(http, srv.base, latecomer, up["token"]), 410, "gone")

    # the same role again: no change, no use
    same = await _invite(http, srv.base, bid, owner, role="member")
    r = await _accept(http, srv.base, viewer, same["token"])
    assert r.status == 200 and r.body["role"] == "member", r.body
    assert (await _listed(http, srv.base, bid, owner))[same["id"]]["uses"] == 0

    assert await member_roles(http, srv.base, bid, owner) == {
        owner.user_id: "owner",
        admin.user_id: "admin",
        viewer.user_id: "member",
        newcomer.user_id: "viewer",
    }


async def test_only_an_owner_invites_admins(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "ann")
    owner, admin, ann = people.values()
    bid = await board_with_roles(http, srv.base, {"owner": owner, "admin": admin})
    url = board_url(srv.base, bid, "/invitations")

    assert_error(await call(http, "POST", url, admin, json={"role": "admin"}), 403, "forbidden")
    assert await _listed(http, srv.base, bid, owner) == {}
    for role in ("member", "viewer"):
        assert (await _invite(http, srv.base, bid, admin, role=role))["role"] == role
    inv = await _invite(http, srv.base, bid, owner, role="admin")
    r = await _accept(http, srv.base, ann, inv["token"])
    assert r.status == 200 and r.body["role"] == "admin", r.body


async def test_invitation_bodies_are_validated(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, people)
    url = board_url(srv.base, bid, "/invitations")

    for body in (
        {"role": "owner"},
        {"role": "boss"},
        {"max_uses": 0},
        {"max_uses": 1001},
        {"max_uses": -1},
        {"expires_in_s": 0},
        {"expires_in_s": -10},
        {"expires_in_s": 30 * DAY_S + 1},
        {"expires_in_s": 10**12},
        {"max_uses": "many"},
        {"unknown": 1},
    ):
        assert_error(await call(http, "POST", url, owner, json=body), 400, "bad_request")
    assert await _listed(http, srv.base, bid, owner) == {}

    # the bounds themselves are fine
    assert (await _invite(http, srv.base, bid, owner, max_uses=1000))["max_uses"] == 1000
    longest = await _invite(http, srv.base, bid, owner, expires_in_s=30 * DAY_S)
    assert abs(_lifetime_s(longest) - 30 * DAY_S) < 60, longest
    assert len(await _listed(http, srv.base, bid, owner)) == 2
