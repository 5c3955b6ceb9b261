"""Clients of the multi-node tests: each a WebSocket client that behaves as docs/PROTOCOL.md
tells a real one to, across node deaths, hand-offs and Redis outages, and checks every frame
it receives.

A :class:`Client` keeps one logical session on a board over as many connections as it takes:
on a lost connection (kill -9, SIGTERM's 1001) it connects to a running node and re-joins
with ``since_seq`` (its last seq); on `left board_unavailable` it re-joins the same way; a
command answered with a retryable error (``unavailable``, ``not_joined``, ``timeout``) or not
answered at all is sent again with the **same request id**, which the board de-duplicates.
Every event it receives is applied to its :class:`tests.boardmodel.BoardModel` as it
arrives: an event that is not the next seq (a gap, a duplicate) fails the test at once, and a
resume must carry exactly the missed events. :func:`check_storm` then compares what clients
were acknowledged with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from tests.boardmodel import BoardModel, db_state
from tests.nodes import Node, Nodes
from tests.wsclient import WsClient

# "internal": the outcome is not known either; the same request id makes a retry safe
RETRYABLE = frozenset({"unavailable", "not_joined", "timeout", "internal"})
_ATTEMPT_S = 8.0  # one attempt's wait for its answers before the commands are sent again


class _StampedLog(list[dict[str, Any]]):
    """A WebSocket client's log that also notes when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, m: dict[str, Any]) -> None:
        self.times.append(time.monotonic())
        super().append(m)


class StampedWsClient(WsClient):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, encoding: str) -> None:
        super().__init__(ws, encoding)
        self.log = self.stamped = _StampedLog()  # before the receiving task first runs


def _answered(rids: list[str], mark: int) -> Callable[[list[dict[str, Any]]], bool]:
    """Whether each of ``rids`` has an ack or error in the log after ``mark``."""
    wanted = set(rids)

    def check(log: list[dict[str, Any]]) -> bool:
        got = {m.get("rid") for m in log[mark:] if m["type"] in ("ack", "error")}
        return wanted <= got

    return check


@dataclass
class Client:
    name: str
    nodes: Nodes
    home: int  # the node it prefers (while that one runs)
    board_id: str
    column_id: str
    encoding: str = "msgpack"
    # With a second column: a mixed storm (cards created, their descriptions edited, cards
    # moved between the columns) instead of creations only.
    other_column: str | None = None
    token: str | None = None
    ws: StampedWsClient | None = None
    model: BoardModel | None = None
    joined: bool = False
    seen: list[int] = field(default_factory=list)  # the seq of every event applied, in order
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # rid -> first ack
    ack_seqs: dict[str, set[int]] = field(default_factory=dict)  # rid -> every seq acked for it
    ack_at: dict[str, float] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)  # rid -> last time it was sent
    errors: list[dict[str, Any]] = field(default_factory=list)  # every error received
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # rid -> final error
    lefts: list[dict[str, Any]] = field(default_factory=list)
    connects: list[int] = field(default_factory=list)  # the node of each connection
    snapshots_on_resume: int = 0
    acked_more: asyncio.Event = field(default_factory=asyncio.Event)  # set on each new ack
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)  # rid -> its one command
    made: int = 0  # commands numbered so far
    _pos: int = 0

    # ------------------------------------------------------------------ connection

    def _pick(self) -> Node:
        n = len(self.nodes)
        for k in range(n):
            node = self.nodes[(self.home + k) % n]
            if node.running and not node.paused:
                return node
        raise ConnectionError("no node is running")

    async def connect(self, timeout_s: float = 20.0) -> None:
        """(Re)connect to a running node, preferring home, and join (resume once joined)."""
        if self.ws is not None:
            self.scan()
            await self.ws.close()
            self.ws = None
        self.joined = False
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    node = self._pick()
                    url = node.ws_url + (f"?access_token={self.token}" if self.token else "")
                    ws = await StampedWsClient.connect(self.nodes.http, url, self.encoding)
                    assert isinstance(ws, StampedWsClient)
                    self.ws, self._pos = ws, 0
                    self.connects.append(node.index)
                    return await self.join()
                except (aiohttp.ClientError, OSError, ConnectionError, TimeoutError):
                    await asyncio.sleep(0.1)  # a node restarting or killed: try again shortly

    async def join(self) -> None:
        """Join (first time: a snapshot; afterwards: resume from the last seq), retrying a
        join refused as unavailable; raises ConnectionError if the socket closes."""
        assert self.ws is not None
        for attempt in range(100):
            self.scan()
            since = None if self.model is None else self.model.seq
            msg: dict[str, Any] = {"type": "join", "board_id": self.board_id}
            if since is not None:
                msg["since_seq"] = since
            try:
                answer = await self.ws.request(msg, timeout=_ATTEMPT_S)
            except TimeoutError:
                if self.ws.closed.is_set():
                    raise ConnectionError("closed while joining") from None
                continue
            if answer["type"] == "joined":
                self.scan()  # the answer is in the log: checked there against our seq
                self.joined = True
                return
            assert answer["type"] == "error" and answer["code"] in RETRYABLE, answer
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        raise AssertionError(f"{self.name}: could not join {self.board_id}")

    # ------------------------------------------------------------------ what arrives

    def scan(self) -> None:
        """Apply everything received since the last scan, checking each message."""
        ws = self.ws
        if ws is None:
            return
        log, times = ws.stamped, ws.stamped.times
        while self._pos < len(log):
            m, t = log[self._pos], times[self._pos]
            self._pos += 1
            if str(m.get("board_id")) != self.board_id:
                continue
            match m["type"]:
                case "joined":
                    self._apply_joined(m)
                case "event":
                    assert self.model is not None, f"{self.name}: an event before joined: {m}"
                    assert m["seq"] == self.model.seq + 1, (
                        f"{self.name}: event seq {m['seq']} after {self.model.seq} (a gap or a duplicate)"
                    )
                    self.model.apply(m)
                    self.seen.append(m["seq"])
                case "ack":
                    rid = m["rid"]
                    self.acks.setdefault(rid, m)
                    self.acked_more.set()
                    self.ack_at.setdefault(rid, t)
                    self.ack_seqs.setdefault(rid, set()).add(m["seq"])
                case "error":
                    self.errors.append(m)
                case "left":
                    self.lefts.append(m)
                    self.joined = False

    def _apply_joined(self, m: dict[str, Any]) -> None:
        if "snapshot" in m:
            if self.model is not None:
                self.snapshots_on_resume += 1  # a resync: allowed, but not silent
            self.model = BoardModel(m["snapshot"])
            assert self.model.seq == m["seq"], m
            return
        assert self.model is not None, f"{self.name}: a resume answer to a first join: {m}"
        events = m["events"]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, seqs
        assert not seqs or seqs[-1] == m["seq"], (seqs[-1:], m["seq"])
        assert m["seq"] >= self.model.seq, f"{self.name}: joined at {m['seq']} behind {self.model.seq}"
        assert not seqs or seqs[0] <= self.model.seq + 1, (
            f"{self.name}: resume from {seqs[0]} after {self.model.seq}: a gap"
        )
        for e in events:
            if e["seq"] > self.model.seq:
                self.model.apply(e)
                self.seen.append(e["seq"])

    # ------------------------------------------------------------------ commands

    def _op(self, rid: str) -> dict[str, Any]:
        """The command of this request id: chosen once, so a retry sends the same one."""
        op = self.ops.get(rid)
        if op is None:
            op = self.ops[rid] = self._choose(rid)
        return op

    def _choose(self, rid: str) -> dict[str, Any]:
        i = int(rid.rsplit("-", 1)[1]) if rid.rsplit("-", 1)[-1].isdigit() else 0
        cards = sorted(self.model.cards) if self.model is not None else []
        if self.other_column is None or i % 3 == 0 or not cards:
            return {"op": "card.create", "column_id": self.column_id, "title": rid}
        card = cards[(i * 7919 + len(self.name)) % len(cards)]
        if i % 3 == 1:
            return {"op": "card.update", "card_id": card, "description": rid}
        to = (self.column_id, self.other_column)[(i // 3) % 2]
        return {"op": "card.move", "card_id": card, "column_id": to}

    async def settle(self, rids: list[str], deadline_s: float = 45.0) -> None:
        """Send these commands (pipelined) until each is acknowledged or finally refused,
        reconnecting and re-joining as needed; retried commands keep their request id."""
        todo = list(rids)
        give_up = time.monotonic() + deadline_s
        attempt = 0
        while todo:
            if time.monotonic() > give_up:
                for rid in todo:
                    self.failed[rid] = {"type": "error", "code": "gave_up", "rid": rid}
                return
            attempt += 1
            try:
                if self.ws is None or self.ws.closed.is_set():
                    await self.connect()
                elif not self.joined:
                    await self.join()
                assert self.ws is not None
                mark = len(self.ws.log)
                for rid in todo:
                    self.sent_at[rid] = time.monotonic()
                    await self.ws.send_cmd(self.board_id, self._op(rid), rid=rid)
                ws = self.ws
                try:
                    await ws.wait_until(_answered(todo, mark), timeout=_ATTEMPT_S, what="answers")
                except TimeoutError:
                    pass
                self.scan()
                after = ws.log[mark:]
            except (ConnectionError, aiohttp.ClientError, OSError):
                self.scan()
                self.ws = None if self.ws is None or self.ws.closed.is_set() else self.ws
                await asyncio.sleep(0.05)
                continue
            still: list[str] = []
            for rid in todo:
                if rid in self.acks:
                    continue
                errs = [m for m in after if m.get("rid") == rid and m["type"] == "error"]
                if errs and errs[-1]["code"] not in RETRYABLE:
                    self.failed[rid] = errs[-1]
                    continue
                still.append(rid)
            todo = still
            if todo:
                if any(m["type"] == "error" and m["code"] == "not_joined" for m in after):
                    self.joined = False
                await asyncio.sleep(min(0.02 * attempt, 0.3))

    async def storm(self, count: int, burst: int = 3, stop: asyncio.Event | None = None) -> None:
        """``count`` new commands in pipelined bursts (fewer if ``stop`` is set), numbered on
        from this client's earlier storms."""
        first = self.made
        for b in range(first, first + count, burst):
            if stop is not None and stop.is_set():
                return
            rids = [f"{self.name}-{i}" for i in range(b, min(first + count, b + burst))]
            self.made += len(rids)
            await self.settle(rids)

    async def catch_up(self, seq: int, timeout_s: float = 30.0) -> None:
        """Wait until this client has applied every event up to ``seq`` (re-joining if the
        board left it or its socket closed meanwhile)."""
        async with asyncio.timeout(timeout_s):
            while True:
                if self.ws is None or self.ws.closed.is_set():
                    await self.connect()
                self.scan()
                if not self.joined:
                    try:
                        await self.join()
                    except ConnectionError:
                        continue
                if self.model is not None and self.model.seq >= seq:
                    return
                try:
                    assert self.ws is not None
                    await self.ws.ping(timeout=5)
                except (TimeoutError, ConnectionError, aiohttp.ClientError):
                    await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.ws is not None:
            self.scan()
            await self.ws.close()
            self.ws = None


# ---------------------------------------------------------------------- checking


@dataclass
class Stored:
    seqs: list[int]
    by_rid: dict[str, int]  # request id -> seq
    rid_counts: Counter[str]
    titles: Counter[str]


async def stored(database_url: str, board_id: str) -> Stored:
    conn = await asyncpg.connect(database_url)
    try:
        bid = uuid.UUID(board_id)
        rows = await conn.fetch(
            "SELECT seq, request_id FROM board_events WHERE board_id = $1 ORDER BY seq", bid
        )
        cards = await conn.fetch("SELECT title FROM cards WHERE board_id = $1", bid)
    finally:
        await conn.close()
    rids = [r["request_id"] for r in rows if r["request_id"] is not None]
    return Stored(
        seqs=[r["seq"] for r in rows],
        by_rid={r["request_id"]: r["seq"] for r in rows if r["request_id"] is not None},
        rid_counts=Counter(rids),
        titles=Counter(c["title"] for c in cards),
    )


async def check_storm(database_url: str, board_id: str, clients: list[Client], *, all_acked: bool) -> Stored:
    """What every client was told against PostgreSQL:

    - the event log has no gap, each request id in it once, each card (titled by its
      request id) made once: nothing doubled;
    - every acknowledged command is stored, at the seq it was acknowledged with (and every
      ack of one request id names the same seq);
    - a command finally refused is stored at most once (never doubled); with ``all_acked``
      none may be refused;
    - every client, caught up, holds exactly PostgreSQL's board and saw every event from its
      first join on, in seq order.
    """
    s = await stored(database_url, board_id)
    assert s.seqs == list(range(1, len(s.seqs) + 1)), "the event log has a gap"
    doubled = {rid: n for rid, n in s.rid_counts.items() if n > 1}
    assert not doubled, f"request ids stored more than once: {doubled}"
    assert not {t: n for t, n in s.titles.items() if n > 1}, "a card made twice"
    for c in clients:
        for rid, seqs in c.ack_seqs.items():
            assert len(seqs) == 1, f"{c.name}: {rid} acknowledged with different seqs {seqs}"
            (seq,) = seqs
            assert s.by_rid.get(rid) == seq, f"{c.name}: {rid} acked at {seq}, stored at {s.by_rid.get(rid)}"
        for rid, err in c.failed.items():
            assert rid not in c.acks, (rid, err)
        if all_acked:
            assert not c.failed, f"{c.name}: refused {list(c.failed.items())[:3]}"
    final = s.seqs[-1] if s.seqs else 0
    await asyncio.gather(*(c.catch_up(final) for c in clients))
    want = await db_state(database_url, board_id)
    for c in clients:
        assert c.model is not None
        assert c.model.normalised() == want, f"{c.name} differs from PostgreSQL"
        first = c.seen[0] if c.seen else final + 1
        if not c.snapshots_on_resume:
            assert c.seen == list(range(first, final + 1)), f"{c.name} missed or repeated events"
    return s


async def wait_acks(clients: list[Client], total: int, timeout_s: float = 30.0) -> None:
    """Until the clients together hold ``total`` acks (their storms run in other tasks)."""
    async with asyncio.timeout(timeout_s):
        while True:
            for c in clients:
                c.acked_more.clear()
            if acked(clients) >= total:
                return
            waits = [asyncio.ensure_future(c.acked_more.wait()) for c in clients]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


def acked(clients: list[Client]) -> int:
    return sum(len(c.acks) for c in clients)
