"""A client's copy of a board, built the way a real client builds it: a snapshot, then events
applied in seq order. Also the same normalised shape read from REST and straight from Postgres,
so tests can compare what every party believes the board is."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

# (id, title, rank) per column in board order; (id, column_id, title, description, rank) per card
# grouped by column in column order, each column's cards in rank order.
Normalised = dict[str, Any]


class BoardModel:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.id = str(snapshot["id"])
        self.title: str = snapshot["title"]
        self.description: str = snapshot.get("description", "")
        self.seq: int = snapshot["seq"]
        self.columns: dict[str, dict[str, Any]] = {
            str(c["id"]): {"title": c["title"], "rank": c["rank"]} for c in snapshot["columns"]
        }
        self.cards: dict[str, dict[str, Any]] = {
            str(c["id"]): {
                "column_id": str(c["column_id"]),
                "title": c["title"],
                "description": c.get("description", ""),
                "rank": c["rank"],
            }
            for c in snapshot["cards"]
        }
        self.deleted = False

    def apply(self, msg: dict[str, Any]) -> None:
        """Apply one `event` message; it must be the next seq."""
        assert msg["type"] == "event", msg
        assert msg["seq"] == self.seq + 1, f"expected seq {self.seq + 1}, got {msg['seq']}"
        ev = msg["event"]
        kind = ev["kind"]
        if kind == "board.updated":
            if ev.get("title") is not None:
                self.title = ev["title"]
            if ev.get("description") is not None:
                self.description = ev["description"]
        elif kind == "board.deleted":
            self.deleted = True
        elif kind == "column.created":
            col = ev["column"]
            self.columns[str(col["id"])] = {"title": col["title"], "rank": col["rank"]}
            self._rerank(self.columns, ev.get("rebalanced", []))
        elif kind == "column.updated":
            self.columns[str(ev["column_id"])]["title"] = ev["title"]
        elif kind == "column.moved":
            self.columns[str(ev["column_id"])]["rank"] = ev["rank"]
            self._rerank(self.columns, ev.get("rebalanced", []))
        elif kind == "column.deleted":
            col_id = str(ev["column_id"])
            del self.columns[col_id]
            gone = {str(i) for i in ev.get("card_ids", [])}
            for card in ev.get("moved", []):  # cards the request moved to another column
                self.cards[str(card["id"])].update(column_id=str(card["column_id"]), rank=card["rank"])
            assert gone == {i for i, c in self.cards.items() if c["column_id"] == col_id}
            for card_id in gone:
                del self.cards[card_id]
        elif kind == "card.created":
            card = ev["card"]
            self.cards[str(card["id"])] = {
                "column_id": str(card["column_id"]),
                "title": card["title"],
                "description": card.get("description", ""),
                "rank": card["rank"],
            }
            self._rerank(self.cards, ev.get("rebalanced", []))
        elif kind == "card.updated":
            card = self.cards[str(ev["card_id"])]
            if ev.get("title") is not None:
                card["title"] = ev["title"]
            if ev.get("description") is not None:
                card["description"] = ev["description"]
        elif kind == "card.moved":
            card = self.cards[str(ev["card_id"])]
            card["column_id"] = str(ev["column_id"])
            card["rank"] = ev["rank"]
            self._rerank(self.cards, ev.get("rebalanced", []))
        elif kind == "card.deleted":
            del self.cards[str(ev["card_id"])]
        else:
            raise AssertionError(f"unknown event kind {kind!r}")
        self.seq = msg["seq"]

    def apply_all(self, events: list[dict[str, Any]]) -> BoardModel:
        """Apply every event newer than this model, in order (older ones are ignored)."""
        for e in events:
            if e["seq"] > self.seq:
                self.apply(e)
        return self

    @staticmethod
    def _rerank(items: dict[str, dict[str, Any]], changes: list[list[Any]]) -> None:
        for item_id, rank in changes:
            items[str(item_id)]["rank"] = rank

    def column_ids(self) -> list[str]:
        return sorted(self.columns, key=lambda i: self.columns[i]["rank"])

    def card_ids(self, column_id: str) -> list[str]:
        ids = [i for i, c in self.cards.items() if c["column_id"] == column_id]
        return sorted(ids, key=lambda i: self.cards[i]["rank"])

    def normalised(self) -> Normalised:
        cols = self.column_ids()
        return {
            "title": self.title,
            "description": self.description,
            "seq": self.seq,
            "columns": [(i, self.columns[i]["title"], self.columns[i]["rank"]) for i in cols],
            "cards": [
                (i, col, self.cards[i]["title"], self.cards[i]["description"], self.cards[i]["rank"])
                for col in cols
                for i in self.card_ids(col)
            ],
        }


def normalise_snapshot(snap: dict[str, Any]) -> Normalised:
    """A snapshot (REST or `joined`) in the shape of :meth:`BoardModel.normalised`, keeping
    the snapshot's own order, so a mis-ordered snapshot compares unequal."""
    return {
        "title": snap["title"],
        "description": snap.get("description", ""),
        "seq": snap["seq"],
        "columns": [(str(c["id"]), c["title"], c["rank"]) for c in snap["columns"]],
        "cards": [
            (str(c["id"]), str(c["column_id"]), c["title"], c.get("description", ""), c["rank"])
            for c in snap["cards"]
        ],
    }


async def db_state(database_url: str, board_id: str) -> Normalised:
    """What Postgres holds for the board, in the same shape."""
    conn = await asyncpg.connect(database_url)
    try:
        bid = uuid.UUID(board_id)
        b = await conn.fetchrow("SELECT title, description, seq FROM boards WHERE id = $1", bid)
        assert b is not None, f"board {board_id} is not in Postgres"
        cols = await conn.fetch(
            "SELECT id, title, rank FROM columns WHERE board_id = $1 ORDER BY rank, id", bid
        )
        cards = await conn.fetch(
            """SELECT id, column_id, title, description, rank FROM cards
               WHERE board_id = $1 ORDER BY rank, id""",
            bid,
        )
    finally:
        await conn.close()
    col_order = [str(r["id"]) for r in cols]
    by_col: dict[str, list[Any]] = {c: [] for c in col_order}
    for r in cards:
        by_col[str(r["column_id"])].append(
            (str(r["id"]), str(r["column_id"]), r["title"], r["description"], r["rank"])
        )
    return {
        "title": b["title"],
        "description": b["description"],
        "seq": b["seq"],
        "columns": [(str(r["id"]), r["title"], r["rank"]) for r in cols],
        "cards": [card for c in col_order for card in by_col[c]],
    }


async def db_events(database_url: str, board_id: str) -> list[dict[str, Any]]:
    """The board's event log rows (seq, kind, request_id), in seq order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT seq, kind, request_id FROM board_events WHERE board_id = $1 ORDER BY seq",
            uuid.UUID(board_id),
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def rest_snapshot(http: Any, base: str, board_id: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/v1/boards/{board_id}") as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body
