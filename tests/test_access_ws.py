"""Board access over WebSocket (docs/ACCESS.md): joins and commands per role, and what a
connected client is told when its access changes under it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest

from actors import AccessChanged, Unsubscribe
from actors.state import BoardState
from server.keys import MEMBERS, REGISTRY, REPO
from tests.conftest import ENCODINGS, RunningServer
from tests.identity import Account, ws_url_with_token
from tests.roles import accounts, board_url, board_with_roles, call, set_visibility
from tests.wsclient import WsClient, new_rid

WsFactory = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def ws_as(http: aiohttp.ClientSession) -> AsyncIterator[WsFactory]:
    """Connect as an account (token in the query string); every client closed at the end."""
    clients: list[WsClient] = []

    async def make(srv: RunningServer, who: Account, encoding: str = "json") -> WsClient:
        c = await WsClient.connect(http, ws_url_with_token(srv.ws_url, who.access_token), encoding)
        assert c.welcome["user_id"] == who.user_id, c.welcome
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def _column(http: aiohttp.ClientSession, base: str, bid: str, who: Account, title: str = "Todo") -> str:
    r = await call(http, "POST", board_url(base, bid, "/columns"), who, json={"title": title})
    assert r.status == 201, r.body
    return str(r.body["id"])


async def _card(http: aiohttp.ClientSession, base: str, bid: str, who: Account, column_id: str) -> str:
    r = await call(
        http, "POST", board_url(base, bid, "/cards"), who, json={"column_id": column_id, "title": "K"}
    )
    assert r.status == 201, r.body
    return str(r.body["id"])


async def _seq(http: aiohttp.ClientSession, base: str, bid: str, who: Account) -> int:
    r = await call(http, "GET", board_url(base, bid), who)
    assert r.status == 200, r.body
    return int(r.body["seq"])


def _assert_refused(answer: dict[str, Any], code: str, rid: str, bid: str) -> None:
    assert answer["type"] == "error", answer
    assert answer["code"] == code, answer
    assert answer["rid"] == rid and answer["board_id"] == bid, answer
    assert isinstance(answer["message"], str) and answer["message"]


def _after(log: list[dict[str, Any]], marker: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages received after ``marker`` (compared by identity)."""
    for i, m in enumerate(log):
        if m is marker:
            return log[i + 1 :]
    raise AssertionError("marker not in log")


def _is_access(bid: str, role: str | None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: str(m.get("board_id")) == bid and m.get("role") == role


def _assert_access(m: dict[str, Any], bid: str, role: str | None) -> None:
    assert m["type"] == "access" and m["board_id"] == bid, m
    assert "role" in m and m["role"] == role, m  # null is spelled out (docs/ACCESS.md, PROTOCOL.md)


async def _expect_revoked(c: WsClient, bid: str) -> None:
    """`access` with no role, then `left` with reason access_revoked; the socket stays open."""
    access = await c.expect("access", lambda m: str(m.get("board_id")) == bid)
    _assert_access(access, bid, None)
    left = await c.expect("left", lambda m: str(m.get("board_id")) == bid)
    assert left["reason"] == "access_revoked" and "rid" not in left, left
    assert c.log.index(access) < c.log.index(left)
    await c.ping()
    assert not c.closed.is_set()


def _presence_conns(log: list[dict[str, Any]], bid: str, part: str) -> set[str]:
    return {
        x["conn_id"]
        for m in log
        if m.get("type") == "presence" and str(m.get("board_id")) == bid
        for x in m.get(part, [])
    }


async def _presence_joined(watcher: WsClient, bid: str, tabs: list[WsClient]) -> None:
    joined = {t.welcome["conn_id"] for t in tabs}
    await watcher.wait_until(
        lambda log: joined <= _presence_conns(log, bid, "joined"), what="presence joined for the tabs"
    )


async def _presence_gone(watcher: WsClient, bid: str, tabs: list[WsClient]) -> None:
    """Other viewers see the dropped connections leave the board's presence."""
    gone = {t.welcome["conn_id"] for t in tabs}
    await watcher.wait_until(
        lambda log: gone <= _presence_conns(log, bid, "left"), what="presence left for the dropped tabs"
    )


# ------------------------------------------------------------------ joining


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_each_role_may_join_and_nobody_else_learns_the_board_exists(
    http, start_server, ws_as, encoding
):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "member", "viewer", "outsider")
    bid = await board_with_roles(http, srv.base, people)
    col = await _column(http, srv.base, bid, people["owner"])
    seq = await _seq(http, srv.base, bid, people["owner"])

    for role in ("owner", "admin", "member", "viewer"):
        c = await ws_as(srv, people[role], encoding)
        joined = await c.join(bid)
        assert joined["type"] == "joined", (role, joined)
        assert [x["id"] for x in joined["snapshot"]["columns"]] == [col]

    c = await ws_as(srv, people["outsider"], encoding)
    refused = await c.request({"type": "join", "rid": "j-secret", "board_id": bid})
    _assert_refused(refused, "not_found", "j-secret", bid)
    missing = str(uuid.uuid4())
    unknown = await c.request({"type": "join", "rid": "j-nothing", "board_id": missing})
    _assert_refused(unknown, "not_found", "j-nothing", missing)

    def normalised(m: dict[str, Any], board_id: str) -> str:
        return json.dumps({k: v for k, v in m.items() if k != "rid"}, sort_keys=True).replace(board_id, "<b>")

    assert normalised(refused, bid) == normalised(unknown, missing)

    # the refused join left nothing behind: commands are not_joined
    answer = await c.cmd(bid, {"op": "column.create", "title": "X"}, rid="c-after")
    _assert_refused(answer, "not_joined", "c-after", bid)
    assert await _seq(http, srv.base, bid, people["owner"]) == seq

    # a signed_in board is open to every signed-in user, as a viewer
    await set_visibility(http, srv.base, bid, people["owner"], "signed_in")
    joined = await c.join(bid)
    assert joined["type"] == "joined", joined
    answer = await c.cmd(bid, {"op": "column.create", "title": "X"}, rid="c-viewer")
    _assert_refused(answer, "forbidden", "c-viewer", bid)


async def test_upgrade_needs_a_valid_token(http, start_server):
    srv = await start_server(auth="jwt")
    (ann,) = (await accounts(http, srv.base, "ann")).values()
    protocols = ("boardcast.v1.json",)
    claims = jwt.decode(ann.access_token, options={"verify_signature": False})
    now = int(time.time())
    forged = jwt.encode(
        {**claims, "iat": now, "exp": now + 600}, "not-the-server-secret" * 2, algorithm="HS256"
    )
    unsigned = jwt.encode({**claims, "iat": now, "exp": now + 600}, None, algorithm="none")
    for label, url, headers in [
        ("no token", srv.ws_url, None),
        ("garbage", ws_url_with_token(srv.ws_url, "not-a-token"), None),
        ("forged signature", ws_url_with_token(srv.ws_url, forged), None),
        ("alg none", ws_url_with_token(srv.ws_url, unsigned), None),
        ("garbage bearer", srv.ws_url, {"Authorization": "Bearer not-a-token"}),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            ws = await http.ws_connect(url, protocols=protocols, headers=headers)
            await ws.close()
        assert caught.value.status == 401, (label, caught.value)

    # the same account with its real token, in the header this time
    ws = await http.ws_connect(srv.ws_url, protocols=protocols, headers=ann.headers)
    try:
        welcome = await ws.receive_json(timeout=10)
        assert welcome["type"] == "welcome" and welcome["user_id"] == ann.user_id
    finally:
        await ws.close()


# ------------------------------------------------------------------ commands by role


def _every_op(column: str, column2: str, card: str) -> list[dict[str, Any]]:
    return [
        {"op": "column.create", "title": "X"},
        {"op": "column.update", "column_id": column, "title": "Y"},
        {"op": "column.move", "column_id": column, "after": column2},
        {"op": "card.create", "column_id": column, "title": "Z"},
        {"op": "card.update", "card_id": card, "title": "W"},
        {"op": "card.move", "card_id": card, "column_id": column2},
        {"op": "card.delete", "card_id": card},
        {"op": "column.delete", "column_id": column, "cards": "delete"},
        {"op": "board.update", "title": "Mine now"},
    ]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_viewers_commands_are_forbidden_and_change_nothing(http, start_server, ws_as, encoding):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "viewer")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, people)
    col, col2 = await _column(http, srv.base, bid, owner, "A"), await _column(http, srv.base, bid, owner, "B")
    card = await _card(http, srv.base, bid, owner, col)
    seq = await _seq(http, srv.base, bid, owner)
    watcher = await ws_as(srv, owner, encoding)
    await watcher.join(bid)
    viewer = await ws_as(srv, people["viewer"], encoding)
    await viewer.join(bid)

    for op in _every_op(col, col2, card):
        rid = new_rid()
        _assert_refused(await viewer.cmd(bid, op, rid=rid), "forbidden", rid, bid)

    assert await _seq(http, srv.base, bid, owner) == seq
    await watcher.ping()
    assert watcher.events(bid) == [] and viewer.events(bid) == []

    # still joined and still told about changes
    await _column(http, srv.base, bid, owner, "C")
    await viewer.wait_seq(bid, seq + 1)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_members_change_columns_and_cards_but_only_admins_change_the_board(
    http, start_server, ws_as, encoding
):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "admin", "member")
    owner = people["owner"]
    bid = await board_with_roles(http, srv.base, people)
    col, col2 = await _column(http, srv.base, bid, owner, "A"), await _column(http, srv.base, bid, owner, "B")
    card = await _card(http, srv.base, bid, owner, col)
    member = await ws_as(srv, people["member"], encoding)
    await member.join(bid)
    seq = await _seq(http, srv.base, bid, owner)

    *writes, board_update = _every_op(col, col2, card)
    for op in writes:
        answer = await member.cmd(bid, op)
        assert answer["type"] == "ack", (op, answer)
    seq += len(writes)
    assert await _seq(http, srv.base, bid, owner) == seq

    rid = new_rid()
    _assert_refused(await member.cmd(bid, board_update, rid=rid), "forbidden", rid, bid)
    assert await _seq(http, srv.base, bid, owner) == seq

    for role in ("admin", "owner"):
        c = await ws_as(srv, people[role], encoding)
        await c.join(bid)
        answer = await c.cmd(bid, {"op": "board.update", "title": f"By the {role}"})
        assert answer["type"] == "ack", (role, answer)
    snapshot = (await call(http, "GET", board_url(srv.base, bid), owner)).body
    assert snapshot["title"] == "By the owner" and snapshot["seq"] == seq + 2


# ------------------------------------------------------------------ access changing under a connection


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_removed_member_is_told_on_every_connection_and_hears_nothing_more(
    http, start_server, ws_as, encoding
):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "member")
    owner, bob = people["owner"], people["member"]
    bid = await board_with_roles(http, srv.base, people)
    other = await board_with_roles(http, srv.base, people, title="Other")  # bob stays on this one
    col = await _column(http, srv.base, bid, owner)
    watcher = await ws_as(srv, owner, encoding)
    await watcher.join(bid)
    tabs = [await ws_as(srv, bob, encoding) for _ in range(2)]
    for tab in tabs:
        await tab.join(bid)
        await tab.join(other)
    elsewhere = await ws_as(srv, bob, encoding)  # connected, but has not joined the board
    await elsewhere.join(other)
    # Joins are announced on the presence timer: the watcher must have heard of the tabs to
    # hear them leave (a join and leave within one interval are never announced at all).
    await _presence_joined(watcher, bid, tabs)

    r = await call(http, "DELETE", board_url(srv.base, bid, f"/members/{bob.user_id}"), owner)
    assert r.status == 204, r.body
    for tab in tabs:
        await _expect_revoked(tab, bid)
    await _presence_gone(watcher, bid, tabs)
    await elsewhere.ping()
    assert [m for m in elsewhere.log if m["type"] in ("access", "left")] == []

    seq = await _seq(http, srv.base, bid, owner)
    for tab in tabs:
        rid = new_rid()
        _assert_refused(
            await tab.cmd(bid, {"op": "card.create", "column_id": col, "title": "x"}, rid=rid),
            "not_joined",
            rid,
            bid,
        )
    assert await _seq(http, srv.base, bid, owner) == seq

    # changes go on without them
    await _card(http, srv.base, bid, owner, col)
    await watcher.wait_seq(bid, seq + 1)
    for tab in tabs:
        await tab.ping()
        assert [e["seq"] for e in tab.events(bid) if e["seq"] > seq] == []
        # the other board is unaffected
        answer = await tab.cmd(other, {"op": "column.create", "title": "still here"})
        assert answer["type"] == "ack", answer

    # and the board is gone for them
    rid = new_rid()
    _assert_refused(
        await tabs[0].request({"type": "join", "rid": rid, "board_id": bid}), "not_found", rid, bid
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_role_change_is_announced_and_the_next_command_obeys_it(http, start_server, ws_as, encoding):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "member")
    owner, bob = people["owner"], people["member"]
    bid = await board_with_roles(http, srv.base, people)
    col = await _column(http, srv.base, bid, owner)
    c = await ws_as(srv, bob, encoding)
    await c.join(bid)
    role_url = board_url(srv.base, bid, f"/members/{bob.user_id}")

    async def set_role(role: str) -> dict[str, Any]:
        r = await call(http, "PATCH", role_url, owner, json={"role": role})
        assert r.status == 200 and r.body["role"] == role, r.body
        access = await c.expect("access", _is_access(bid, role))
        _assert_access(access, bid, role)
        return access

    access = await set_role("viewer")
    seq = await _seq(http, srv.base, bid, owner)
    rid = new_rid()
    _assert_refused(await c.cmd(bid, {"op": "column.create", "title": "x"}, rid=rid), "forbidden", rid, bid)
    assert await _seq(http, srv.base, bid, owner) == seq
    assert not [m for m in _after(c.log, access) if m["type"] == "left"], "a demoted viewer stays joined"
    await _column(http, srv.base, bid, owner, "by owner")
    await c.wait_seq(bid, seq + 1)

    await set_role("member")
    answer = await c.cmd(bid, {"op": "card.create", "column_id": col, "title": "back"})
    assert answer["type"] == "ack", answer
    rid = new_rid()
    _assert_refused(await c.cmd(bid, {"op": "board.update", "title": "t"}, rid=rid), "forbidden", rid, bid)

    await set_role("admin")
    answer = await c.cmd(bid, {"op": "board.update", "title": "Promoted"})
    assert answer["type"] == "ack", answer


async def test_a_demotion_applies_to_a_command_sent_right_after_the_rest_answer(http, start_server, ws_as):
    """Once PATCH .../members/{id} has answered, the old role is gone: a command sent at once,
    without waiting for the `access` frame, is already checked against the new role."""
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "member")
    owner, bob = people["owner"], people["member"]
    bid = await board_with_roles(http, srv.base, people)
    c = await ws_as(srv, bob)
    await c.join(bid)
    seq = await _seq(http, srv.base, bid, owner)

    r = await call(
        http, "PATCH", board_url(srv.base, bid, f"/members/{bob.user_id}"), owner, json={"role": "viewer"}
    )
    assert r.status == 200, r.body
    rid = new_rid()
    _assert_refused(
        await c.cmd(bid, {"op": "column.create", "title": "late"}, rid=rid), "forbidden", rid, bid
    )
    assert await _seq(http, srv.base, bid, owner) == seq
    await c.wait_until(lambda log: any(m["type"] == "access" for m in log), what="the access frame")
    (access,) = [m for m in c.log if m["type"] == "access"]
    _assert_access(access, bid, "viewer")


async def test_making_a_board_private_drops_signed_in_strangers_but_not_members(http, start_server, ws_as):
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "viewer", "stranger")
    owner, stranger = people["owner"], people["stranger"]
    bid = await board_with_roles(http, srv.base, people)
    await set_visibility(http, srv.base, bid, owner, "signed_in")
    col = await _column(http, srv.base, bid, owner)
    tabs = [await ws_as(srv, stranger) for _ in range(2)]
    for tab in tabs:
        joined = await tab.join(bid)
        assert joined["type"] == "joined", joined
    member_view = await ws_as(srv, people["viewer"])
    await member_view.join(bid)

    await set_visibility(http, srv.base, bid, owner, "private")
    await _presence_gone(member_view, bid, tabs)
    for tab in tabs:
        await _expect_revoked(tab, bid)
        rid = new_rid()
        _assert_refused(
            await tab.cmd(bid, {"op": "column.create", "title": "x"}, rid=rid), "not_joined", rid, bid
        )
    rid = new_rid()
    _assert_refused(
        await tabs[0].request({"type": "join", "rid": rid, "board_id": bid}), "not_found", rid, bid
    )

    # the board's own viewer keeps watching, and is not told anything about access
    seq = await _seq(http, srv.base, bid, owner)
    await _card(http, srv.base, bid, owner, col)
    await member_view.wait_seq(bid, seq + 1)
    assert [m for m in member_view.log if m["type"] in ("access", "left")] == []
    for tab in tabs:
        await tab.ping()
        assert [e for e in tab.events(bid) if e["seq"] > seq] == []


# ------------------------------------------------------------------ races with a busy board


async def _member_joined(
    http: aiohttp.ClientSession, start_server: Callable[..., Awaitable[RunningServer]], ws_as: WsFactory
) -> tuple[RunningServer, Account, Account, str, str, WsClient]:
    """A jwt server and a board with a column, whose owner has a member (bob) joined over a
    WebSocket: (server, owner, bob, board id, column id, bob's connection)."""
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "member")
    owner, bob = people["owner"], people["member"]
    bid = await board_with_roles(http, srv.base, people)
    col = await _column(http, srv.base, bid, owner)
    c = await ws_as(srv, bob)
    await c.join(bid)
    return srv, owner, bob, bid, col, c


_HELD: list[_Held] = []


@pytest.fixture(autouse=True)
def _release_held() -> Iterator[None]:
    """A test that fails while holding something must not leave its server unable to stop."""
    yield
    while _HELD:
        _HELD.pop().release()


class _Held:
    """Wraps the async method ``name`` of one of the server's objects so that the ``nth`` call
    (from 1) that ``matches`` is held, after it has done its work, until :meth:`release`: the
    database answers as always, only when the caller hears it is under the test's control."""

    def __init__(
        self, obj: Any, name: str, nth: int = 1, matches: Callable[..., bool] = lambda *a: True
    ) -> None:
        self._obj, self._name = obj, name
        self._orig = getattr(obj, name)
        self._nth, self._matches, self._calls = nth, matches, 0
        self.entered = asyncio.Event()
        self._gate = asyncio.Event()
        setattr(obj, name, self._call)
        _HELD.append(self)

    async def _call(self, *args: Any) -> Any:
        answer = await self._orig(*args)
        if self._matches(*args):
            self._calls += 1
            if self._calls == self._nth:
                self.entered.set()
                await self._gate.wait()
        return answer

    def release(self) -> None:
        self._gate.set()
        setattr(self._obj, self._name, self._orig)


def _access_of(user: Account) -> Callable[..., bool]:
    return lambda board_id, user_id: str(user_id) == user.user_id


async def _hold_board(srv: RunningServer, ws_as: WsFactory, bid: str, who: Account, col: str) -> _Held:
    """Keep the board's actor busy: a command of ``who`` is applied and its group commit is
    held, so everything sent to the board from now on queues in its mailbox."""
    held = _Held(srv.app[REPO], "persist")
    c = await ws_as(srv, who)
    await c.join(bid)
    await c.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "holds the board"})
    await asyncio.wait_for(held.entered.wait(), 10)
    return held


@pytest.mark.parametrize("change", ["removed", "demoted"])
async def test_a_command_queued_behind_a_membership_change_is_refused(http, start_server, ws_as, change):
    """The REST answer has come, the board has not yet processed the change (it is busy), and
    the member's connection still holds its old grant: the command it sends now is decided by
    the board when it reaches it, after the change, and refused."""
    srv, owner, bob, bid, col, c = await _member_joined(http, start_server, ws_as)
    seq = await _seq(http, srv.base, bid, owner)

    held = await _hold_board(srv, ws_as, bid, owner, col)
    member_url = board_url(srv.base, bid, f"/members/{bob.user_id}")
    if change == "removed":
        r = await call(http, "DELETE", member_url, owner)
        assert r.status == 204, r.body
    else:
        r = await call(http, "PATCH", member_url, owner, json={"role": "viewer"})
        assert r.status == 200, r.body
    rid = await c.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "after the change"})
    await c.ping()  # the server has read the command (frames are read in order): it is queued
    held.release()

    answer = (await c.wait_answers([rid]))[rid]
    _assert_refused(answer, "not_joined" if change == "removed" else "forbidden", rid, bid)
    assert await _seq(http, srv.base, bid, owner) == seq + 1  # the owner's held card, nothing more
    await c.wait_until(lambda log: any(m["type"] == "access" for m in log), what="the access frame")
    (access,) = [m for m in c.log if m["type"] == "access"]
    _assert_access(access, bid, None if change == "removed" else "viewer")


async def test_a_join_racing_a_removal_does_not_keep_the_old_grant(http, start_server, ws_as):
    """The join's first access check answers "member"; the removal commits before the board
    subscribes the connection. The board checks again as it subscribes: the join is refused
    as for any board one cannot see, and nothing can be written through it."""
    srv = await start_server(auth="jwt")
    people = await accounts(http, srv.base, "owner", "member")
    owner, bob = people["owner"], people["member"]
    bid = await board_with_roles(http, srv.base, people)
    col = await _column(http, srv.base, bid, owner)
    seq = await _seq(http, srv.base, bid, owner)
    c = await ws_as(srv, bob)

    held = _Held(srv.app[MEMBERS], "access", matches=_access_of(bob))
    join = asyncio.create_task(c.join(bid))
    await asyncio.wait_for(held.entered.wait(), 10)
    r = await call(http, "DELETE", board_url(srv.base, bid, f"/members/{bob.user_id}"), owner)
    assert r.status == 204, r.body
    held.release()

    answer = await join
    assert answer["type"] == "error" and answer["code"] == "not_found", answer
    rid = new_rid()
    answer = await c.cmd(bid, {"op": "card.create", "column_id": col, "title": "x"}, rid=rid)
    _assert_refused(answer, "not_joined", rid, bid)
    assert await _seq(http, srv.base, bid, owner) == seq
    assert not [m for m in c.log if m["type"] in ("joined", "event")]


async def _delete_membership(database_url: str, bid: str, who: Account) -> None:
    """Remove a membership behind the board's back: no AccessChanged is sent, as if it had
    been lost (or made by another process)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "DELETE FROM board_members WHERE board_id = $1 AND user_id = $2",
            uuid.UUID(bid),
            uuid.UUID(who.user_id),
        )
    finally:
        await conn.close()


async def _expect_lost(c: WsClient, bid: str, col: str) -> None:
    """The connection was told it lost the board (`access` null, then `left`), and a command
    to it is refused as not joined."""
    await c.wait_until(lambda log: any(m["type"] == "left" for m in log), what="the left frame")
    (access,) = [m for m in c.log if m["type"] == "access"]
    _assert_access(access, bid, None)
    rid = new_rid()
    answer = await c.cmd(bid, {"op": "card.create", "column_id": col, "title": "x"}, rid=rid)
    _assert_refused(answer, "not_joined", rid, bid)


async def test_the_board_reads_access_when_it_processes_a_change(http, start_server, ws_as, database_url):
    """An AccessChanged carries no role: the board reads the access itself, when it gets to
    the message, so it applies the latest committed state even if messages about one user
    arrive out of order (or one is about a change it never heard of)."""
    srv, _, bob, bid, col, c = await _member_joined(http, start_server, ws_as)

    await _delete_membership(database_url, bid, bob)
    srv.app[REGISTRY].tell_if_active(uuid.UUID(bid), AccessChanged(user_id=uuid.UUID(bob.user_id)))
    await _expect_lost(c, bid, col)


async def test_a_board_that_restarts_reads_its_viewers_access_again(http, start_server, ws_as, database_url):
    """A crash can lose an AccessChanged that was in the failed batch: the board reads every
    viewer's access again with its state when it restarts."""
    srv, owner, bob, bid, col, c = await _member_joined(http, start_server, ws_as)
    o = await ws_as(srv, owner)
    await o.join(bid)
    await _delete_membership(database_url, bid, bob)

    repo = srv.app[REPO]
    persist = repo.persist

    async def fail_once(*args: Any) -> Any:
        repo.persist = persist  # type: ignore[method-assign]
        raise ConnectionError("the database went away")

    repo.persist = fail_once  # type: ignore[method-assign]
    rid = await o.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "fails"})
    assert (await o.wait_answers([rid]))[rid]["code"] == "unavailable"

    await _expect_lost(c, bid, col)
    # the owner carries on
    assert (await o.cmd(bid, {"op": "card.create", "column_id": col, "title": "ok"}))["type"] == "ack"


async def test_a_retry_of_a_command_applied_before_a_demotion_is_a_duplicate(http, start_server, ws_as):
    srv, owner, bob, bid, col, c = await _member_joined(http, start_server, ws_as)
    op = {"op": "card.create", "column_id": col, "title": "before"}
    rid = new_rid()
    first = await c.cmd(bid, op, rid=rid)
    assert first["type"] == "ack", first

    r = await call(
        http, "PATCH", board_url(srv.base, bid, f"/members/{bob.user_id}"), owner, json={"role": "viewer"}
    )
    assert r.status == 200, r.body
    await c.wait_until(lambda log: any(m["type"] == "access" for m in log), what="the access frame")
    again = await c.request({"type": "cmd", "rid": rid, "board_id": bid, "op": op})
    assert again["type"] == "ack" and again["seq"] == first["seq"] and again["duplicate"] is True, again
    # the same rid for another command is refused for the role, not answered `conflict`
    other = await c.request({"type": "cmd", "rid": rid, "board_id": bid, "op": {**op, "title": "other"}})
    _assert_refused(other, "forbidden", rid, bid)
    assert await _seq(http, srv.base, bid, owner) == first["seq"]


# ------------------------------------------------------------------ failures while reading access


def _fail_once(obj: Any, name: str, *, after_original: bool = False) -> None:
    """The next call of ``obj.name`` raises ConnectionError (``after_original``: after doing
    its work, as when the reply is lost); later calls work again."""
    original = getattr(obj, name)

    async def once(*args: Any) -> Any:
        setattr(obj, name, original)
        if after_original:
            await original(*args)
        raise ConnectionError(f"{name}: the database went away")

    setattr(obj, name, once)


async def test_a_rejoin_refused_for_lost_access_leaves_the_board(http, start_server, ws_as, database_url):
    """A joined member joins again and is removed between the join's two access checks: the
    board tells them they lost it, the join is answered `not_found`, and none of the board's
    events reach them afterwards."""
    srv, owner, bob, bid, col, c = await _member_joined(http, start_server, ws_as)
    held = _Held(srv.app[MEMBERS], "access", matches=_access_of(bob))
    join = asyncio.create_task(c.join(bid))
    await asyncio.wait_for(held.entered.wait(), 10)
    await _delete_membership(database_url, bid, bob)  # unannounced: only the board's read sees it
    held.release()
    answer = await join
    assert answer["type"] == "error" and answer["code"] == "not_found", answer
    assert [m["type"] for m in c.log if m["type"] in ("access", "left")] == ["access", "left"]

    mark = len(c.log)
    await _card(http, srv.base, bid, owner, col)
    await c.ping()  # the socket is in order: an event sent with the card would be here by now
    assert [m["type"] for m in c.log[mark:]] == ["pong"], c.log[mark:]


async def test_a_commit_whose_reply_was_lost_is_acked_even_when_access_cannot_be_read(
    http, start_server, ws_as
):
    """The commit went through but its reply was lost, so the board reloads; reading its
    viewers' access fails too. The command is acknowledged all the same (it is durable), and
    the viewers, whose grants could not be checked, are told to join again."""
    srv, owner, _, bid, col, c = await _member_joined(http, start_server, ws_as)
    o = await ws_as(srv, owner)
    await o.join(bid)
    _fail_once(srv.app[REPO], "persist", after_original=True)
    _fail_once(srv.app[MEMBERS], "access_many")
    rid = await o.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "kept"})
    answer = (await o.wait_answers([rid]))[rid]
    assert answer["type"] == "ack", answer
    await c.wait_until(
        lambda log: any(m["type"] == "left" and m["reason"] == "board_unavailable" for m in log),
        what="board_unavailable",
    )
    joined = await c.join(bid)
    assert joined["type"] == "joined" and joined["seq"] == answer["seq"], joined
    assert [card["title"] for card in joined["snapshot"]["cards"]] == ["kept"], joined["snapshot"]


async def test_commands_behind_a_crash_whose_reload_fails_are_failed_and_never_applied(
    http, start_server, ws_as, monkeypatch
):
    """A bug while applying a command makes the board reload; if that reload fails too, every
    command of the batch is answered with an error, and none of them is applied later."""
    original = BoardState.apply

    def apply(self: BoardState, cmd: Any, *args: Any) -> Any:
        if getattr(cmd, "title", None) == "crash":
            raise RuntimeError("a bug")
        return original(self, cmd, *args)

    monkeypatch.setattr(BoardState, "apply", apply)
    srv, owner, _, bid, col, c = await _member_joined(http, start_server, ws_as)
    o = await ws_as(srv, owner)
    await o.join(bid)
    held = await _hold_board(srv, ws_as, bid, owner, col)
    actor = srv.app[REGISTRY].get(uuid.UUID(bid))
    enqueue, unsubscribe_queued = actor._enqueue, asyncio.Event()

    def watch(env: Any) -> None:
        enqueue(env)
        if isinstance(env.msg, Unsubscribe):
            unsubscribe_queued.set()

    monkeypatch.setattr(actor, "_enqueue", watch)
    crash = await o.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "crash"})
    behind = await o.send_cmd(bid, {"op": "card.create", "column_id": col, "title": "behind the crash"})
    await o.ping()  # both are queued behind the held commit, so they share the next batch
    leave = new_rid()
    await c.send({"type": "leave", "rid": leave, "board_id": bid})  # in the same batch, after them
    await asyncio.wait_for(unsubscribe_queued.wait(), 10)  # a ping would wait for the leave
    _fail_once(srv.app[REPO], "load_board")
    held.release()

    answers = await o.wait_answers([crash, behind])
    assert [answers[r]["type"] for r in (crash, behind)] == ["error", "error"], answers
    seq = await _seq(http, srv.base, bid, owner)
    await o.ping()
    assert [len(o.answers(r)) for r in (crash, behind)] == [1, 1], o.log
    r = await call(http, "GET", board_url(srv.base, bid), owner)
    assert "behind the crash" not in [card["title"] for card in r.body["cards"]], r.body
    assert r.body["seq"] == seq
    # the leave in that batch was answered with an error, but it happened all the same: the
    # board's events no longer reach the connection that left
    await c.wait_until(lambda log: any(m.get("rid") == leave for m in log), what="the leave's answer")
    mark = len(c.log)
    await _card(http, srv.base, bid, owner, col)
    await c.ping()
    assert [m["type"] for m in c.log[mark:]] == ["pong"], c.log[mark:]
