"""Many clients moving cards at once on one board: one total order, seen identically by all.

Every client pipelines its moves (sends many before any ack) while the others do the same.
Afterwards every client must have seen every event exactly once, in seq order 1..N, and the
board each client rebuilt from events must equal the server's snapshot and Postgres' rows.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.boardmodel import BoardModel, db_events, db_state, normalise_snapshot, rest_snapshot
from tests.conftest import create_board
from tests.wsclient import WsClient

CLIENTS = 8
COLUMNS = 3
CARDS_PER_COLUMN = 20
MOVES_PER_CLIENT = 25


async def _setup_board(
    http, server, connect, n_clients: int
) -> tuple[str, list[WsClient], list[str], list[dict[str, Any]]]:
    """A board with COLUMNS columns of CARDS_PER_COLUMN cards, every client joined at seq 0
    (so each sees every event from 1), mixed encodings. Returns board id, clients, column ids
    and each client's joined snapshot."""
    board = await create_board(http, server.base, "Ordering")
    bid = board["id"]
    clients = [await connect("msgpack" if i % 2 == 0 else "json") for i in range(n_clients)]
    snapshots = []
    for cl in clients:
        joined = await cl.join(bid)
        assert joined["type"] == "joined" and joined["seq"] == 0, joined
        assert joined["snapshot"]["columns"] == [] and "events" not in joined
        snapshots.append(joined["snapshot"])
    setup = clients[0]
    col_rids = [await setup.send_cmd(bid, {"op": "column.create", "title": f"C{i}"}) for i in range(COLUMNS)]
    acks = await setup.wait_answers(col_rids)
    assert [acks[r]["type"] for r in col_rids] == ["ack"] * COLUMNS
    await setup.wait_seq(bid, COLUMNS)
    by_rid = {e["rid"]: e for e in setup.events(bid)}
    col_ids = [str(by_rid[r]["event"]["column"]["id"]) for r in col_rids]
    card_rids = [
        await setup.send_cmd(bid, {"op": "card.create", "column_id": col, "title": f"{c}-{k}"})
        for c, col in enumerate(col_ids)
        for k in range(CARDS_PER_COLUMN)
    ]
    acks = await setup.wait_answers(card_rids)
    assert all(a["type"] == "ack" for a in acks.values()), [a for a in acks.values() if a["type"] != "ack"]
    base = COLUMNS + COLUMNS * CARDS_PER_COLUMN
    for cl in clients:
        await cl.wait_seq(bid, base)
    return bid, clients, col_ids, snapshots


def _random_move(rng: random.Random, model: BoardModel, exclude: frozenset[str]) -> dict[str, Any]:
    """A move built from the client's current (possibly stale) view of the board; cards in
    ``exclude`` are neither moved nor used as neighbours."""
    card_id = rng.choice(sorted(set(model.cards) - exclude))
    target = rng.choice(model.column_ids())
    others = [i for i in model.card_ids(target) if i != card_id and i not in exclude]
    op: dict[str, Any] = {"op": "card.move", "card_id": card_id, "column_id": target}
    how = rng.choice(("after", "before", "end")) if others else "end"
    if how != "end":
        op[how] = rng.choice(others)
    return op


async def _mover(
    client: WsClient,
    bid: str,
    snapshot: dict[str, Any],
    seed: int,
    moves: int,
    exclude: frozenset[str] = frozenset(),
) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    model = BoardModel(snapshot)
    sent: list[tuple[str, dict[str, Any]]] = []
    for i in range(moves):
        model.apply_all(client.events(bid))
        op = _random_move(rng, model, exclude)
        sent.append((await client.send_cmd(bid, op), op))
        if i % 5 == 4:
            await asyncio.sleep(0)  # let other clients' sends and our own events interleave
    return sent


def _check_answers(
    clients: list[WsClient], sent: list[list[tuple[str, dict[str, Any]]]], bid: str
) -> tuple[dict[str, int], set[str]]:
    """Every rid answered exactly once; returns acked rid -> seq and the refused rids."""
    acked: dict[str, int] = {}
    refused: set[str] = set()
    for cl, mine in zip(clients, sent, strict=True):
        for rid, op in mine:
            answers = cl.answers(rid)
            assert len(answers) == 1, (rid, op, answers)
            a = answers[0]
            assert str(a["board_id"]) == bid
            if a["type"] == "ack":
                assert not a.get("duplicate", False), a
                acked[rid] = a["seq"]
            else:
                # The only legitimate refusal here: the view was stale and the neighbour had
                # moved to another column (or the neighbour is the card itself after a move).
                assert a["code"] == "bad_request", (op, a)
                refused.add(rid)
    return acked, refused


async def test_concurrent_pipelined_moves_are_seen_in_one_order_by_every_client(
    http, server, connect, database_url
):
    bid, clients, _, joined = await _setup_board(http, server, connect, CLIENTS)
    base = COLUMNS + COLUMNS * CARDS_PER_COLUMN
    start = await rest_snapshot(http, server.base, bid)
    assert start["seq"] == base

    sent = await asyncio.gather(
        *(_mover(cl, bid, start, 1000 + i, MOVES_PER_CLIENT) for i, cl in enumerate(clients))
    )
    for cl, mine in zip(clients, sent, strict=True):
        await cl.wait_answers([rid for rid, _ in mine])
    acked, refused = _check_answers(clients, sent, bid)
    assert len(acked) + len(refused) == CLIENTS * MOVES_PER_CLIENT
    assert len(acked) >= CLIENTS * MOVES_PER_CLIENT // 2, f"only {len(acked)} moves accepted"

    # Acked seqs are unique and are exactly the seqs after the setup.
    final = base + len(acked)
    assert sorted(acked.values()) == list(range(base + 1, final + 1))

    for cl in clients:
        await cl.wait_seq(bid, final)
        await cl.ping()  # anything queued after the last event has arrived too
    reference = clients[0].events(bid)
    for cl in clients:
        evs = cl.events(bid)
        assert [e["seq"] for e in evs] == list(range(1, final + 1)), "gap or duplicate"
        # The same events, byte for byte after decoding, in both encodings.
        assert evs == reference
    by_seq = {e["seq"]: e for e in reference}
    for rid, seq in acked.items():
        assert by_seq[seq]["rid"] == rid
        assert by_seq[seq]["event"]["kind"] == "card.moved"
    event_rids = {e.get("rid") for e in reference}
    assert not (refused & event_rids), "a refused command produced an event"

    # Every client's rebuilt board is the same board, and the server and Postgres agree.
    models = [
        BoardModel(snap).apply_all(cl.events(bid)).normalised()
        for cl, snap in zip(clients, joined, strict=True)
    ]
    for m in models[1:]:
        assert m == models[0]
    assert models[0]["seq"] == final
    assert len(models[0]["cards"]) == COLUMNS * CARDS_PER_COLUMN
    rest = normalise_snapshot(await rest_snapshot(http, server.base, bid))
    assert rest == models[0]
    assert await db_state(database_url, bid) == models[0]
    log = await db_events(database_url, bid)
    assert [r["seq"] for r in log] == list(range(1, final + 1))
    assert {r["request_id"] for r in log if r["seq"] > base} == set(acked)


async def test_moves_into_one_gap_rebalance_and_every_client_agrees(http, server, connect, database_url):
    """Moving card after card into the same gap exhausts the midpoints; the column is
    rebalanced and the new ranks travel in the event, while others keep moving cards."""
    bid, clients, col_ids, joined = await _setup_board(http, server, connect, 3)
    base = COLUMNS + COLUMNS * CARDS_PER_COLUMN
    start = await rest_snapshot(http, server.base, bid)
    model = BoardModel(start)
    anchor = model.card_ids(col_ids[0])[0]
    movers = [i for c in col_ids[1:] for i in model.card_ids(c)][:40]

    async def hammer() -> list[str]:
        # Each card goes directly after the anchor, so the gap after it halves every time.
        return [
            await clients[0].send_cmd(
                bid, {"op": "card.move", "card_id": card, "column_id": col_ids[0], "after": anchor}
            )
            for card in movers
        ]

    # The others move the remaining cards around, but never the anchor or a hammered card
    # and never next to them, so the hammered run's final order is known.
    keep_out = frozenset([anchor, *movers])
    hammered, *others = await asyncio.gather(
        hammer(), *(_mover(cl, bid, start, 7 + i, 15, keep_out) for i, cl in enumerate(clients[1:]))
    )
    answers = await clients[0].wait_answers(hammered)
    assert all(a["type"] == "ack" for a in answers.values()), answers
    for cl, mine in zip(clients[1:], others, strict=True):
        await cl.wait_answers([rid for rid, _ in mine])
    final = (await rest_snapshot(http, server.base, bid))["seq"]
    for cl in clients:
        await cl.wait_seq(bid, final)
    evs = clients[0].events(bid)
    assert [e["seq"] for e in evs] == list(range(1, final + 1))
    assert final >= base + len(movers)
    assert any(e["event"].get("rebalanced") for e in evs), "no move ever needed a rebalance"

    models = [
        BoardModel(snap).apply_all(cl.events(bid)).normalised()
        for cl, snap in zip(clients, joined, strict=True)
    ]
    assert models[0] == models[1] == models[2]
    # The hammered cards sit right after the anchor, the last one moved nearest to it...
    col0 = [card[0] for card in models[0]["cards"] if card[1] == col_ids[0]]
    i = col0.index(anchor)
    assert col0[i + 1 : i + 1 + len(movers)] == list(reversed(movers))
    # ...and ranks within each column are strictly increasing after all the rebalancing.
    for col in col_ids:
        ranks = [card[4] for card in models[0]["cards"] if card[1] == col]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert normalise_snapshot(await rest_snapshot(http, server.base, bid)) == models[0]
    assert await db_state(database_url, bid) == models[0]
