"""Helpers for the access control tests: REST calls that keep status, headers and body, the
standard error body, and a board with one signed-in account per role."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp

from tests.identity import Account, add_member, new_board, register

API = "/api/v1"
ROLES = ("owner", "admin", "member", "commenter", "viewer")


@dataclasses.dataclass
class Reply:
    status: int
    headers: Any
    body: Any


async def call(
    http: aiohttp.ClientSession, method: str, url: str, who: Account | None = None, **kw: Any
) -> Reply:
    """One REST request as ``who`` (anonymous when None)."""
    if who is not None:
        kw["headers"] = {**kw.get("headers", {}), **who.headers}
    async with http.request(method, url, **kw) as r:
        raw = await r.read()
        body: Any = None
        if raw:
            assert r.content_type == "application/json", (r.status, raw[:200])
            body = await r.json()
        return Reply(r.status, r.headers, body)


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """The body is exactly {"error": {code, message, request_id, details?}}, the request id
    echoed in X-Request-Id; returns the inner object."""
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, reply.body
    err = reply.body["error"]
    assert set(err) in ({"code", "message", "request_id"}, {"code", "message", "request_id", "details"}), err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert "details" not in err or isinstance(err["details"], dict), err
    assert err["request_id"] and err["request_id"] == reply.headers.get("X-Request-Id"), err
    return err


def assert_unauthorized(reply: Reply) -> None:
    assert_error(reply, 401, "unauthorized")
    assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer"), dict(reply.headers)


async def accounts(http: aiohttp.ClientSession, base: str, *names: str) -> dict[str, Account]:
    """Register one account per name (concurrently)."""
    made = await asyncio.gather(*(register(http, base, name=n) for n in names))
    return dict(zip(names, made, strict=True))


async def board_with_roles(
    http: aiohttp.ClientSession,
    base: str,
    people: dict[str, Account],
    title: str = "Access board",
    **roles: str,
) -> str:
    """A board owned by people["owner"] with people["admin"], ["member"], ["viewer"] in their
    roles (those present), plus ``name=role`` extras; returns its id."""
    board = await new_board(http, base, people["owner"], title)
    wanted = {r: r for r in ("admin", "member", "viewer") if r in people} | roles
    for name, role in wanted.items():
        await add_member(http, base, board["id"], people["owner"], people[name], role)
    return str(board["id"])


def board_url(base: str, board_id: str, rest: str = "") -> str:
    return f"{base}{API}/boards/{board_id}{rest}"


async def member_roles(http: aiohttp.ClientSession, base: str, board_id: str, who: Account) -> dict[str, str]:
    """user id -> role, as ``who`` sees the member list."""
    r = await call(http, "GET", board_url(base, board_id, "/members"), who)
    assert r.status == 200, r.body
    return {m["user_id"]: m["role"] for m in r.body["members"]}


async def set_visibility(
    http: aiohttp.ClientSession, base: str, board_id: str, who: Account, visibility: str
) -> None:
    r = await call(http, "PATCH", board_url(base, board_id), who, json={"visibility": visibility})
    assert r.status == 200, r.body
