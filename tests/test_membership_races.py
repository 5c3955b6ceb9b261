"""Membership changes racing each other (docs/ACCESS.md, "Members" and "Invitations"), sent at
the same moment through two servers on one database: two owners demoting, removing each other
or leaving; a single-use invitation accepted by several people at once; a member removed while
they accept a fresh invitation. Whatever the interleaving, every answer and the final member
list must be those of some serial order of the same calls, and a board never loses its last
owner.

Serial outcomes come from :func:`serially`, a restatement of the documented rules small enough
to check by eye; the observed answers and state are compared with every order of the calls."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.identity import Account, add_member, new_board
from tests.roles import API, Reply, accounts, assert_error, board_url, call, member_roles

pytestmark = pytest.mark.timeout(30)

ITERATIONS = 10
RANK = {"owner": 0, "admin": 1, "member": 2, "viewer": 3}  # most powerful first


@pytest.fixture
async def nodes(start_server: ServerFactory) -> list[RunningServer]:
    """Two servers on one database, each with its own connection pool and board registry: the
    racing calls go through different ones, alternating which gets which."""
    return [await start_server(auth="jwt") for _ in range(2)]


# ------------------------------------------------------------------ the serial model


@dataclasses.dataclass(frozen=True)
class Op:
    """One call: ``kind`` is patch (``target`` to ``role``), remove (``target``; oneself is
    leaving), leave, or accept (the board's one invitation); ``actor`` and ``target`` are names."""

    kind: str
    actor: str
    target: str = ""
    role: str | None = None


@dataclasses.dataclass
class BoardState:
    roles: dict[str, str]  # name -> role; a private board: non-members see nothing
    invitation_role: str = "member"
    uses: int = 0
    max_uses: int = 1


Answer = tuple[int, str | None, str | None]  # status, error code, role answered by accept


def serially(state: BoardState, op: Op) -> Answer:
    """What ``op`` answers, applied alone to ``state`` (changed in place), per docs/ACCESS.md."""
    if op.kind == "accept":
        if state.uses >= state.max_uses:
            return 410, "gone", None
        current = state.roles.get(op.actor)
        if current is None or RANK[state.invitation_role] < RANK[current]:
            # a newcomer joins, a member is raised: either uses the invitation
            state.uses += 1
            state.roles[op.actor] = state.invitation_role
            return 200, None, state.invitation_role
        return 200, None, current  # never demotes, and uses nothing
    mine = state.roles.get(op.actor)
    if mine is None:
        return 404, "not_found", None  # private board: as if it did not exist
    target = op.actor if op.kind == "leave" else op.target
    leaving = op.kind in ("leave", "remove") and target == op.actor
    if not leaving and RANK[mine] > RANK["admin"]:
        return 403, "forbidden", None
    current = state.roles.get(target)
    if current is None:
        return 404, "not_found", None
    if (op.role == "owner" or current == "owner") and mine != "owner" and not leaving:
        return 403, "forbidden", None  # only an owner makes, changes or removes owners
    owners = sum(r == "owner" for r in state.roles.values())
    if current == "owner" and op.role != "owner" and owners <= 1:
        return 409, "conflict", None  # the last owner stays
    if op.kind == "patch":
        assert op.role is not None
        state.roles[target] = op.role
        return 200, None, None
    del state.roles[target]
    return 204, None, None


Outcome = tuple[tuple[Answer, ...], tuple[tuple[str, str], ...], int]  # answers, final roles, uses


def serial_outcomes(initial: BoardState, ops: list[Op]) -> set[Outcome]:
    """Every (answers in the order of ``ops``, final roles, invitation uses) that some serial
    order of ``ops`` produces."""
    found = set()
    for order in itertools.permutations(range(len(ops))):
        state = dataclasses.replace(initial, roles=dict(initial.roles))
        answers: dict[int, Answer] = {i: serially(state, ops[i]) for i in order}
        found.add(
            (tuple(answers[i] for i in range(len(ops))), tuple(sorted(state.roles.items())), state.uses)
        )
    return found


# ------------------------------------------------------------------ calls


def members_url(base: str, bid: str, who: Account | None = None) -> str:
    return board_url(base, bid, f"/members/{who.user_id}" if who else "/members")


async def send(
    http: aiohttp.ClientSession, base: str, bid: str, op: Op, people: dict[str, Account], token: str = ""
) -> Reply:
    actor = people[op.actor]
    match op.kind:
        case "patch":
            url = members_url(base, bid, people[op.target])
            return await call(http, "PATCH", url, actor, json={"role": op.role})
        case "remove":
            return await call(http, "DELETE", members_url(base, bid, people[op.target]), actor)
        case "leave":
            return await call(http, "POST", board_url(base, bid, "/leave"), actor)
        case "accept":
            return await call(http, "POST", f"{base}{API}/invitations/accept", actor, json={"token": token})
    raise AssertionError(op)


def answer_of(op: Op, reply: Reply, bid: str, people: dict[str, Account]) -> Answer:
    """The observed answer in the model's terms; errors must use the standard body, and
    successes answer what the routes document."""
    if reply.status >= 400:
        code = reply.body["error"]["code"] if isinstance(reply.body, dict) else None
        assert_error(reply, reply.status, str(code))
        return reply.status, code, None
    if op.kind == "accept":
        assert reply.status == 200 and reply.body["id"] == bid, (reply.status, reply.body)
        return 200, None, reply.body["role"]
    if op.kind == "patch":
        assert reply.status == 200, (reply.status, reply.body)
        assert reply.body["user_id"] == people[op.target].user_id and reply.body["role"] == op.role
        return 200, None, None
    assert reply.status == 204 and reply.body is None, (reply.status, reply.body)
    return 204, None, None


async def race(
    http: aiohttp.ClientSession,
    nodes: list[RunningServer],
    bid: str,
    ops: list[Op],
    people: dict[str, Account],
    shift: int,
    token: str = "",
) -> list[Answer]:
    """All ``ops`` sent at once, the i-th through node (i + shift) % 2. Which request leaves
    first also rotates with ``shift``, so each side of a race gets its turn at the head."""
    first = shift % len(ops)
    order = [*range(first, len(ops)), *range(first)]
    replies = await asyncio.gather(
        *(send(http, nodes[(i + shift) % len(nodes)].base, bid, ops[i], people, token) for i in order)
    )
    by_op = dict(zip(order, replies, strict=True))
    return [answer_of(op, by_op[i], bid, people) for i, op in enumerate(ops)]


async def final_roles(
    http: aiohttp.ClientSession, base: str, bid: str, people: dict[str, Account], reader: Account
) -> tuple[tuple[str, str], ...]:
    """name -> role from GET members as ``reader``; everyone listed must be one of ``people``."""
    by_id = {p.user_id: name for name, p in people.items()}
    listed = await member_roles(http, base, bid, reader)
    assert set(listed) <= set(by_id), listed
    return tuple(sorted((by_id[uid], role) for uid, role in listed.items()))


async def own_view(http: aiohttp.ClientSession, base: str, bid: str, who: Account) -> str | None:
    """The board as ``who`` sees it: their role in their board list (None: not listed), which
    must agree with whether they can open it."""
    r = await call(http, "GET", f"{base}{API}/boards", who)
    assert r.status == 200, r.body
    role: str | None = {b["id"]: b["role"] for b in r.body["boards"]}.get(bid)
    opened = await call(http, "GET", board_url(base, bid), who)
    assert opened.status == (200 if role else 404), (role, opened.status, opened.body)
    return role


# ------------------------------------------------------------------ (a) two owners


SCENARIOS = {
    # each owner demotes the other: the first wins, the second is an admin by then (403)
    "demote_each_other": [Op("patch", "ann", "bob", "admin"), Op("patch", "bob", "ann", "admin")],
    # each owner removes the other: the second is no member any more (404)
    "remove_each_other": [Op("remove", "ann", "bob"), Op("remove", "bob", "ann")],
    # both leave: the second is the last owner (409)
    "both_leave": [Op("leave", "ann"), Op("leave", "bob")],
    # one demotes the other, who leaves: both may succeed (demoted, then left) or only the
    # leave (the demotion then finds no member, 404); an owner stays either way
    "demote_while_leaving": [Op("patch", "ann", "bob", "admin"), Op("leave", "bob")],
}
EXACTLY_ONE_SUCCEEDS = {"demote_each_other", "remove_each_other", "both_leave"}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_two_owners_racing_to_demote_remove_or_leave_keep_an_owner(
    http: aiohttp.ClientSession, nodes: list[RunningServer], scenario: str
) -> None:
    people = await accounts(http, nodes[0].base, "ann", "bob")
    ops = SCENARIOS[scenario]
    expected = serial_outcomes(BoardState({"ann": "owner", "bob": "owner"}), ops)
    for i in range(ITERATIONS):
        board = await new_board(http, nodes[0].base, people["ann"], f"{scenario} {i}")
        bid = str(board["id"])
        await add_member(http, nodes[1].base, bid, people["ann"], people["bob"], "owner")

        answers = await race(http, nodes, bid, ops, people, shift=i)

        # whoever is still on the board reads the member list
        readers = [p for p in people.values() if await own_view(http, nodes[i % 2].base, bid, p)]
        assert readers, f"nobody can read the board any more: {answers}"
        roles = await final_roles(http, nodes[(i + 1) % 2].base, bid, people, readers[0])
        assert "owner" in dict(roles).values(), (answers, roles)
        outcome = (tuple(answers), roles, 0)
        assert outcome in expected, (i, outcome, expected)
        if scenario in EXACTLY_ONE_SUCCEEDS:
            assert sorted(status < 400 for status, _, _ in answers) == [False, True], answers
        # each person's own view agrees with the member list
        for name, p in people.items():
            assert await own_view(http, nodes[0].base, bid, p) == dict(roles).get(name), (name, roles)


# ------------------------------------------------------------------ (b) one use, five takers


async def test_a_single_use_invitation_accepted_by_five_at_once_admits_exactly_one(
    http: aiohttp.ClientSession, nodes: list[RunningServer]
) -> None:
    names = ("owner", "g1", "g2", "g3", "g4", "g5")
    people = await accounts(http, nodes[0].base, *names)
    owner, guests = people["owner"], [n for n in names if n != "owner"]
    for i in range(5):
        bid = str((await new_board(http, nodes[0].base, owner, f"single use {i}"))["id"])
        url = board_url(nodes[1].base, bid, "/invitations")
        r = await call(http, "POST", url, owner, json={"max_uses": 1})
        assert r.status == 201 and (r.body["max_uses"], r.body["uses"]) == (1, 0), r.body
        invitation, token = r.body, r.body["token"]

        ops = [Op("accept", g) for g in guests]
        answers = await race(http, nodes, bid, ops, people, shift=i, token=token)

        winners = [g for g, (status, _, _) in zip(guests, answers, strict=True) if status == 200]
        assert len(winners) == 1, answers
        for g, answer in zip(guests, answers, strict=True):
            # the winner joins with the invited role; everyone else is told it is used up
            assert answer == ((200, None, "member") if g in winners else (410, "gone", None)), (g, answer)
        roles = await final_roles(http, nodes[i % 2].base, bid, people, owner)
        assert roles == tuple(sorted({"owner": "owner", winners[0]: "member"}.items())), roles
        r = await call(http, "GET", board_url(nodes[(i + 1) % 2].base, bid, "/invitations"), owner)
        assert r.status == 200, r.body
        listed = {inv["id"]: inv for inv in r.body["invitations"]}
        assert (listed[invitation["id"]]["uses"], listed[invitation["id"]]["max_uses"]) == (1, 1), listed
        for g in guests:
            assert await own_view(http, nodes[0].base, bid, people[g]) == ("member" if g in winners else None)
        outcome = (tuple(answers), roles, 1)
        assert outcome in serial_outcomes(BoardState({"owner": "owner"}), ops)


async def test_one_user_accepting_a_single_use_invitation_several_times_at_once(
    http: aiohttp.ClientSession, nodes: list[RunningServer]
) -> None:
    """Every accept by the same person answers as in some serial order: the first admits them,
    the others find them a member already, which uses nothing, so they answer 200 too, even
    once the single use is spent."""
    people = await accounts(http, nodes[0].base, "owner", "guest")
    owner, guest = people["owner"], people["guest"]
    bid = str((await new_board(http, nodes[0].base, owner, "one guest, four tabs"))["id"])
    r = await call(http, "POST", board_url(nodes[0].base, bid, "/invitations"), owner, json={"max_uses": 1})
    assert r.status == 201, r.body
    token = r.body["token"]
    ops = [Op("accept", "guest") for _ in range(4)]
    answers = await race(http, nodes, bid, ops, people, shift=0, token=token)
    assert answers == [(200, None, "member")] * 4, answers
    accept = f"{nodes[1].base}/api/v1/invitations/accept"
    later = await call(http, "POST", accept, guest, json={"token": token})
    assert later.status == 200 and later.body["role"] == "member", later.body
    r = await call(http, "GET", board_url(nodes[1].base, bid, "/invitations"), owner)
    assert [(i["uses"], i["max_uses"]) for i in r.body["invitations"]] == [(1, 1)], r.body


# ------------------------------------------------------------------ (c) removed while accepting


@pytest.mark.parametrize(
    "role_before",
    [
        "member",  # the invitation (member) does not raise them: accepted first, it is not used
        "viewer",  # it raises them: accepted first, it is used, and then they are removed anyway
    ],
)
async def test_a_member_removed_while_accepting_an_invitation_ends_up_in_a_serial_state(
    http: aiohttp.ClientSession, nodes: list[RunningServer], role_before: str
) -> None:
    people = await accounts(http, nodes[0].base, "owner", "mia")
    owner, mia = people["owner"], people["mia"]
    ops = [Op("remove", "owner", "mia"), Op("accept", "mia")]
    initial = BoardState({"owner": "owner", "mia": role_before}, invitation_role="member")
    expected = serial_outcomes(initial, ops)
    # the two orders are told apart by the final state: removed last, or joined again last
    assert len({(roles, uses) for _, roles, uses in expected}) == 2, expected
    for i in range(ITERATIONS):
        bid = str((await new_board(http, nodes[0].base, owner, f"removed while accepting {i}"))["id"])
        await add_member(http, nodes[1].base, bid, owner, mia, role_before)
        r = await call(http, "POST", board_url(nodes[0].base, bid, "/invitations"), owner, json={})
        assert r.status == 201 and r.body["role"] == "member" and r.body["max_uses"] == 1, r.body
        invitation, token = r.body, r.body["token"]

        answers = await race(http, nodes, bid, ops, people, shift=i, token=token)

        roles = await final_roles(http, nodes[(i + 1) % 2].base, bid, people, owner)
        r = await call(http, "GET", board_url(nodes[i % 2].base, bid, "/invitations"), owner)
        assert r.status == 200, r.body
        uses = {inv["id"]: inv["uses"] for inv in r.body["invitations"]}[invitation["id"]]
        outcome = (tuple(answers), roles, uses)
        assert outcome in expected, (i, outcome, expected)
        # Mia's own view (board list, opening the board) agrees with the member list
        assert await own_view(http, nodes[i % 2].base, bid, mia) == dict(roles).get("mia"), roles


def test_the_serial_model_matches_the_documented_rules() -> None:
    """The model itself, on the documented single-call cases (docs/ACCESS.md)."""
    two = BoardState({"ann": "owner", "bob": "owner"})
    assert serial_outcomes(two, SCENARIOS["demote_each_other"]) == {
        (((200, None, None), (403, "forbidden", None)), (("ann", "owner"), ("bob", "admin")), 0),
        (((403, "forbidden", None), (200, None, None)), (("ann", "admin"), ("bob", "owner")), 0),
    }
    assert serial_outcomes(two, SCENARIOS["both_leave"]) == {
        (((204, None, None), (409, "conflict", None)), (("bob", "owner"),), 0),
        (((409, "conflict", None), (204, None, None)), (("ann", "owner"),), 0),
    }
    assert serial_outcomes(two, SCENARIOS["demote_while_leaving"]) == {
        (((200, None, None), (204, None, None)), (("ann", "owner"),), 0),
        (((404, "not_found", None), (204, None, None)), (("ann", "owner"),), 0),
    }
    one = BoardState({"ann": "owner", "bob": "admin"})
    assert serially(one, Op("patch", "bob", "ann", "member")) == (403, "forbidden", None)
    assert serially(one, Op("leave", "ann")) == (409, "conflict", None)
    assert serially(one, Op("patch", "ann", "ann", "admin")) == (409, "conflict", None)
    assert serially(one, Op("accept", "bob")) == (200, None, "admin")  # never demotes
    assert one.uses == 0
    assert serially(one, Op("accept", "cy")) == (200, None, "member") and one.uses == 1
    assert serially(one, Op("accept", "dee")) == (410, "gone", None)
    assert one.roles == {"ann": "owner", "bob": "admin", "cy": "member"}
