"""Board members over REST (docs/ACCESS.md, "Members"): listing, adding, role changes,
removal and leaving, the owner rules, transfer, and the caller's role in the board list."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp

from server.config import Rate
from tests.identity import Account
from tests.roles import (
    API,
    accounts,
    assert_error,
    assert_unauthorized,
    board_url,
    board_with_roles,
    call,
    member_roles,
)


def _members_url(base: str, bid: str, user_id: str = "") -> str:
    return board_url(base, bid, f"/members/{user_id}" if user_id else "/members")


async def _my_boards(http: aiohttp.ClientSession, base: str, who: Account) -> dict[str, str]:
    """board id -> the caller's role, from GET /api/v1/boards."""
    r = await call(http, "GET", f"{base}{API}/boards", who)
    assert r.status == 200, r.body
    return {b["id"]: b["role"] for b in r.body["boards"]}


async def _can_read(http: aiohttp.ClientSession, base: str, bid: str, who: Account) -> bool:
    r = await call(http, "GET", board_url(base, bid), who)
    assert r.status in (200, 404), (r.status, r.body)
    return r.status == 200


async def test_the_member_list_shows_emails_to_admins_and_owners_only(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "member", "viewer")
    bid = await board_with_roles(http, srv.base, people)
    expected = {p.user_id: (p.name, role) for role, p in people.items()}
    emails = {p.user_id: p.email for p in people.values()}

    for role, who in people.items():
        r = await call(http, "GET", _members_url(srv.base, bid), who)
        assert r.status == 200, r.body
        assert set(r.body) == {"members"}
        members = r.body["members"]
        assert {m["user_id"]: (m["name"], m["role"]) for m in members} == expected, (role, members)
        assert len(members) == len(expected)
        for m in members:
            if role in ("owner", "admin"):
                assert set(m) == {"user_id", "name", "email", "role"}, (role, m)
                assert m["email"].lower() == emails[m["user_id"]].lower(), (role, m)
            else:
                assert set(m) == {"user_id", "name", "role"}, (role, m)


async def test_adding_members_by_user_id_and_by_email(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "ann", "ben", "cid")
    owner, admin, ann, ben, cid = people.values()
    bid = await board_with_roles(http, srv.base, {"owner": owner, "admin": admin})
    url = _members_url(srv.base, bid)
    assert not await _can_read(http, srv.base, bid, ann)

    r = await call(http, "POST", url, owner, json={"user_id": ann.user_id, "role": "member"})
    assert r.status == 201, r.body
    assert r.body["user_id"] == ann.user_id and r.body["role"] == "member" and r.body["name"] == ann.name
    assert await _can_read(http, srv.base, bid, ann)

    # by email, in another case than it was registered with; an admin may add too
    shouted = ben.email.upper()
    r = await call(http, "POST", url, admin, json={"email": shouted, "role": "viewer"})
    assert r.status == 201, r.body
    assert r.body["user_id"] == ben.user_id and r.body["role"] == "viewer"
    assert await member_roles(http, srv.base, bid, owner) == {
        owner.user_id: "owner",
        admin.user_id: "admin",
        ann.user_id: "member",
        ben.user_id: "viewer",
    }

    # unknown people
    nobody = str(uuid.uuid4())
    err = assert_error(
        await call(http, "POST", url, owner, json={"user_id": nobody, "role": "member"}), 404, "not_found"
    )
    assert "user" in err.get("details", {}), err
    err = assert_error(
        await call(http, "POST", url, owner, json={"email": "nobody-at-all@example.test", "role": "member"}),
        404,
        "not_found",
    )
    assert "user" in err.get("details", {}), err

    # already members: conflict, and the role stays as it was
    assert_error(
        await call(http, "POST", url, owner, json={"user_id": ann.user_id, "role": "admin"}), 409, "conflict"
    )
    assert_error(
        await call(http, "POST", url, owner, json={"email": ben.email.lower(), "role": "admin"}),
        409,
        "conflict",
    )
    assert_error(
        await call(http, "POST", url, owner, json={"user_id": owner.user_id, "role": "viewer"}),
        409,
        "conflict",
    )
    roles = await member_roles(http, srv.base, bid, owner)
    assert (roles[ann.user_id], roles[ben.user_id], roles[owner.user_id]) == ("member", "viewer", "owner")

    # malformed requests
    for body in (
        {"user_id": cid.user_id, "role": "superuser"},
        {"role": "member"},
        {"user_id": "not-a-uuid", "role": "member"},
        {"user_id": cid.user_id, "role": "member", "extra": 1},
    ):
        assert_error(await call(http, "POST", url, owner, json=body), 400, "bad_request")
    assert cid.user_id not in await member_roles(http, srv.base, bid, owner)


async def test_changing_roles_and_removing_members(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "member", "viewer")
    owner, admin, member, viewer = people.values()
    bid = await board_with_roles(http, srv.base, people)
    cols = board_url(srv.base, bid, "/columns")

    r = await call(http, "PATCH", _members_url(srv.base, bid, member.user_id), admin, json={"role": "viewer"})
    assert r.status == 200, r.body
    assert r.body["user_id"] == member.user_id and r.body["role"] == "viewer"
    assert_error(await call(http, "POST", cols, member, json={"title": "x"}), 403, "forbidden")
    r = await call(http, "PATCH", _members_url(srv.base, bid, viewer.user_id), owner, json={"role": "member"})
    assert r.status == 200 and r.body["role"] == "member", r.body
    assert (await call(http, "POST", cols, viewer, json={"title": "y"})).status == 201

    # members and viewers manage nobody, not even to promote themselves
    assert_error(
        await call(
            http, "PATCH", _members_url(srv.base, bid, viewer.user_id), viewer, json={"role": "admin"}
        ),
        403,
        "forbidden",
    )
    assert_error(
        await call(http, "DELETE", _members_url(srv.base, bid, member.user_id), viewer), 403, "forbidden"
    )
    assert_error(
        await call(http, "PATCH", _members_url(srv.base, bid, viewer.user_id), owner, json={"role": "boss"}),
        400,
        "bad_request",
    )
    assert await member_roles(http, srv.base, bid, owner) == {
        owner.user_id: "owner",
        admin.user_id: "admin",
        member.user_id: "viewer",
        viewer.user_id: "member",
    }

    # people who are not members
    stranger = str(uuid.uuid4())
    assert_error(
        await call(http, "PATCH", _members_url(srv.base, bid, stranger), owner, json={"role": "member"}),
        404,
        "not_found",
    )
    assert_error(await call(http, "DELETE", _members_url(srv.base, bid, stranger), owner), 404, "not_found")

    # removal by an admin, then by oneself
    assert (await call(http, "DELETE", _members_url(srv.base, bid, member.user_id), admin)).status == 204
    assert not await _can_read(http, srv.base, bid, member)
    assert bid not in await _my_boards(http, srv.base, member)
    assert (await call(http, "DELETE", _members_url(srv.base, bid, viewer.user_id), viewer)).status == 204
    assert not await _can_read(http, srv.base, bid, viewer)
    assert await member_roles(http, srv.base, bid, owner) == {owner.user_id: "owner", admin.user_id: "admin"}

    # leaving
    assert (await call(http, "POST", board_url(srv.base, bid, "/leave"), admin)).status == 204
    assert not await _can_read(http, srv.base, bid, admin)
    assert await member_roles(http, srv.base, bid, owner) == {owner.user_id: "owner"}


async def test_the_last_owner_cannot_leave_be_removed_or_be_demoted(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin")
    owner, admin = people["owner"], people["admin"]
    bid = await board_with_roles(http, srv.base, people)
    me = _members_url(srv.base, bid, owner.user_id)

    def conflict(reply: Any) -> None:
        assert_error(reply, 409, "conflict")

    conflict(await call(http, "POST", board_url(srv.base, bid, "/leave"), owner))
    conflict(await call(http, "DELETE", me, owner))
    for role in ("admin", "member", "viewer"):
        conflict(await call(http, "PATCH", me, owner, json={"role": role}))
    assert await member_roles(http, srv.base, bid, owner) == {owner.user_id: "owner", admin.user_id: "admin"}

    # with a second owner, either may step down, until one is left
    r = await call(http, "PATCH", _members_url(srv.base, bid, admin.user_id), owner, json={"role": "owner"})
    assert r.status == 200 and r.body["role"] == "owner", r.body
    r = await call(http, "PATCH", me, owner, json={"role": "admin"})
    assert r.status == 200 and r.body["role"] == "admin", r.body
    last = _members_url(srv.base, bid, admin.user_id)
    conflict(await call(http, "POST", board_url(srv.base, bid, "/leave"), admin))
    conflict(await call(http, "DELETE", last, admin))
    conflict(await call(http, "PATCH", last, admin, json={"role": "member"}))
    assert await member_roles(http, srv.base, bid, admin) == {owner.user_id: "admin", admin.user_id: "owner"}


async def test_only_an_owner_makes_or_touches_owners(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "member", "spare")
    owner, admin, member, spare = people.values()
    bid = await board_with_roles(http, srv.base, {"owner": owner, "admin": admin, "member": member})
    url = _members_url(srv.base, bid)
    before = await member_roles(http, srv.base, bid, owner)

    def forbidden(reply: Any) -> None:
        assert_error(reply, 403, "forbidden")

    forbidden(
        await call(http, "PATCH", _members_url(srv.base, bid, owner.user_id), admin, json={"role": "admin"})
    )
    forbidden(await call(http, "DELETE", _members_url(srv.base, bid, owner.user_id), admin))
    forbidden(
        await call(http, "PATCH", _members_url(srv.base, bid, member.user_id), admin, json={"role": "owner"})
    )
    forbidden(
        await call(http, "PATCH", _members_url(srv.base, bid, admin.user_id), admin, json={"role": "owner"})
    )
    forbidden(await call(http, "POST", url, admin, json={"user_id": spare.user_id, "role": "owner"}))
    forbidden(
        await call(
            http, "POST", board_url(srv.base, bid, "/transfer"), admin, json={"user_id": admin.user_id}
        )
    )
    assert await member_roles(http, srv.base, bid, owner) == before

    # an admin still manages everyone else
    r = await call(http, "PATCH", _members_url(srv.base, bid, member.user_id), admin, json={"role": "admin"})
    assert r.status == 200 and r.body["role"] == "admin", r.body

    # an owner may make owners, by role change or when adding
    r = await call(http, "PATCH", _members_url(srv.base, bid, member.user_id), owner, json={"role": "owner"})
    assert r.status == 200 and r.body["role"] == "owner", r.body
    r = await call(http, "POST", url, owner, json={"user_id": spare.user_id, "role": "owner"})
    assert r.status == 201 and r.body["role"] == "owner", r.body
    # ... and change or remove another owner
    r = await call(http, "PATCH", _members_url(srv.base, bid, member.user_id), owner, json={"role": "member"})
    assert r.status == 200 and r.body["role"] == "member", r.body
    assert (await call(http, "DELETE", _members_url(srv.base, bid, spare.user_id), owner)).status == 204
    assert await member_roles(http, srv.base, bid, owner) == {
        owner.user_id: "owner",
        admin.user_id: "admin",
        member.user_id: "member",
    }


async def test_transferring_ownership(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "member")
    alice, bob = people["owner"], people["member"]
    bid = await board_with_roles(http, srv.base, people)

    r = await call(http, "POST", board_url(srv.base, bid, "/transfer"), alice, json={"user_id": bob.user_id})
    assert r.status == 204 and r.body is None
    assert await member_roles(http, srv.base, bid, bob) == {alice.user_id: "admin", bob.user_id: "owner"}
    assert (await _my_boards(http, srv.base, alice))[bid] == "admin"
    assert (await _my_boards(http, srv.base, bob))[bid] == "owner"

    # alice is an admin now: no more owner's rights
    assert_error(await call(http, "DELETE", board_url(srv.base, bid), alice), 403, "forbidden")
    assert_error(
        await call(
            http, "POST", board_url(srv.base, bid, "/transfer"), alice, json={"user_id": alice.user_id}
        ),
        403,
        "forbidden",
    )
    # but may leave, which bob, the only owner, may not
    assert_error(await call(http, "POST", board_url(srv.base, bid, "/leave"), bob), 409, "conflict")
    assert (await call(http, "POST", board_url(srv.base, bid, "/leave"), alice)).status == 204
    assert (await call(http, "DELETE", board_url(srv.base, bid), bob)).status == 204


async def test_the_board_list_shows_the_callers_role(http, start_server):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "alice", "bob", "carol")
    alice, bob, carol = people.values()
    shared = await board_with_roles(http, srv.base, {"owner": alice, "member": bob}, title="Shared")
    watched = await board_with_roles(http, srv.base, {"owner": carol, "viewer": bob}, title="Watched")
    private = await board_with_roles(http, srv.base, {"owner": carol}, title="Carol's")

    r = await call(http, "GET", f"{srv.base}{API}/boards", bob)
    assert r.status == 200, r.body
    mine = {b["id"]: b for b in r.body["boards"]}
    assert {k: v["role"] for k, v in mine.items()} == {shared: "member", watched: "viewer"}
    assert mine[shared]["title"] == "Shared" and mine[watched]["title"] == "Watched"
    assert await _my_boards(http, srv.base, alice) == {shared: "owner"}
    assert await _my_boards(http, srv.base, carol) == {watched: "owner", private: "owner"}

    r = await call(http, "PATCH", _members_url(srv.base, watched, bob.user_id), carol, json={"role": "admin"})
    assert r.status == 200, r.body
    assert await _my_boards(http, srv.base, bob) == {shared: "member", watched: "admin"}
    assert (await call(http, "POST", board_url(srv.base, shared, "/leave"), bob)).status == 204
    assert await _my_boards(http, srv.base, bob) == {watched: "admin"}

    assert_unauthorized(await call(http, "GET", f"{srv.base}{API}/boards"))


async def test_adding_a_member_without_a_role_makes_them_a_member(http, start_server):
    """docs/ACCESS.md: `role` is optional when adding someone and defaults to member."""
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "ann")
    bid = await board_with_roles(http, srv.base, {"owner": people["owner"]})
    r = await call(
        http, "POST", _members_url(srv.base, bid), people["owner"], json={"user_id": people["ann"].user_id}
    )
    assert r.status == 201, r.body
    assert r.body["role"] == "member"
    assert (await member_roles(http, srv.base, bid, people["owner"]))[people["ann"].user_id] == "member"


async def test_adding_by_email_is_limited_like_sign_in_attempts(http, start_server, redis_prefix):
    """The answer to adding by email tells whether the address has an account, so those
    look-ups are limited per user by the auth tier; adding by user id is not."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    srv = await start_server(auth="jwt", rate_limit=True, rate_auth=Rate(4, 600), redis_prefix=prefix)
    people = await accounts(http, srv.base, "owner", "known", "other")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, {"owner": owner})
    url = _members_url(srv.base, bid)
    emails = ("nobody-1@example.com", people["known"].email, "nobody-2@example.com", "nobody-3@example.com")
    answers = [(await call(http, "POST", url, owner, json={"email": email})).status for email in emails]
    assert answers == [404, 201, 404, 404], answers
    refused = await call(http, "POST", url, owner, json={"email": "nobody-4@example.com"})
    assert assert_error(refused, 429, "rate_limited")["details"]["tier"] == "auth", refused.body
    assert int(refused.headers["Retry-After"]) >= 1
    # by user id: not a look-up of an address
    by_id = await call(http, "POST", url, owner, json={"user_id": people["other"].user_id})
    assert by_id.status == 201, by_id.body
