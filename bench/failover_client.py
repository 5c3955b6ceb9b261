"""The ``failover`` worker role: a client of one board on a node that does not own it, which
keeps commanding the board through the owner's death, the way a real client would.

It connects, joins and sends a command every ``interval_s`` (at most ``max_pending``
unanswered). Whatever happens it carries on: a ``left`` (``board_unavailable``) is answered
with a join resuming from its last seq (after ``rejoin_pause_s``, as docs/PROTOCOL.md asks),
a refused join is tried again, a closed socket is opened again. The orchestrator says when it
killed the owner (``{"cmd": "killed", "t": ...}``); the client stops at the first ack of a
command it sent after that instant and reports when each step happened, relative to the kill.

It also checks what it sees: events in ``seq`` order with no gap and no repeat across the
resume, and no ack for a command twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from bench.common import ENCODER, emit
from bench.worker import _ENDED, Control, command, open_ws

TIMELINE_MAX = 200  # steps kept for the report (the first ones)


class Msg(msgspec.Struct):
    """What the client reads of a server message (bench.common.Msg and a `left`'s reason)."""

    type: str
    rid: str | None = None
    seq: int | None = None
    code: str | None = None
    reason: str | None = None


_DECODER: msgspec.msgpack.Decoder[list[Msg] | Msg] = msgspec.msgpack.Decoder(list[Msg] | Msg)


@dataclass
class Client:
    url: str
    board_id: str
    cards: list[str]
    columns: list[str]
    tag: str
    rejoin_pause_s: float
    ws: aiohttp.ClientWebSocketResponse | None = None
    joined: bool = False
    join_rid: str | None = None
    last_seq: int = 0
    n: int = 0  # commands sent
    joins: int = 0
    pending: dict[str, float] = field(default_factory=dict)  # rid -> when it was sent
    acked: dict[str, float] = field(default_factory=dict)
    t_kill: float | None = None
    first_ack: tuple[float, float, int] | None = None  # sent, acked, seq: of a command sent after the kill
    counts: Counter[str] = field(default_factory=Counter)  # errors by code, lefts by reason, closes, ...
    gaps: int = 0
    repeats: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    steady: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, what: str) -> None:
        self.counts[what] += 1
        if len(self.timeline) < TIMELINE_MAX:
            self.timeline.append((time.monotonic(), what))

    def join(self) -> None:
        assert self.ws is not None
        self.joins += 1
        self.join_rid = f"{self.tag}-join{self.joins}"
        msg: dict[str, Any] = {"type": "join", "rid": self.join_rid, "board_id": self.board_id}
        if self.last_seq:
            msg["since_seq"] = self.last_seq
        asyncio.get_running_loop().create_task(self.ws.send_bytes(ENCODER.encode(msg)))

    def rejoin_later(self) -> None:
        ws = self.ws
        if ws is not None:
            asyncio.get_running_loop().call_later(
                self.rejoin_pause_s, lambda: self.join() if self.ws is ws and not ws.closed else None
            )

    async def send_command(self) -> None:
        assert self.ws is not None
        rid = f"{self.tag}-c{self.n}"
        data = command(self.n, self.board_id, rid, self.cards, self.columns)
        self.n += 1
        self.pending[rid] = time.monotonic()
        await self.ws.send_bytes(data)

    def on_message(self, m: Msg, t: float) -> None:
        match m.type:
            case "welcome":
                self.join()
            case "joined" if m.rid == self.join_rid:
                self.joined = True
                self.last_seq = max(self.last_seq, m.seq or 0)
                self.note("joined")
            case "event":
                seq = m.seq or 0
                if seq <= self.last_seq:
                    self.repeats += 1
                elif seq != self.last_seq + 1:
                    self.gaps += 1
                self.last_seq = max(self.last_seq, seq)
            case "ack" if m.rid in self.pending:
                sent = self.pending.pop(m.rid)
                if m.rid in self.acked:
                    self.counts["ack_twice"] += 1
                self.acked[m.rid] = t
                self.steady.set()
                if self.t_kill is not None and sent >= self.t_kill and self.first_ack is None:
                    self.first_ack = (sent, t, m.seq or 0)
                    self.note("first_ack_after_kill")
            case "error" if m.rid is not None and m.rid == self.join_rid:
                self.note(f"join_error:{m.code}")
                self.rejoin_later()
            case "error" if m.rid in self.pending:
                self.pending.pop(m.rid)
                self.note(f"cmd_error:{m.code}")
            case "left":
                self.joined = False
                self.note(f"left:{m.reason or 'unknown'}")
                self.rejoin_later()

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            frame = await ws.receive()
            if frame.type is aiohttp.WSMsgType.BINARY:
                t = time.monotonic()
                decoded = _DECODER.decode(frame.data)
                for m in decoded if isinstance(decoded, list) else [decoded]:
                    self.on_message(m, t)
            elif frame.type in _ENDED:
                self.note(f"closed:{ws.close_code}")
                return


async def role_failover(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    c = Client(
        spec["url"],
        spec["board_id"],
        spec["cards"],
        spec["columns"],
        spec["tag"],
        spec.get("rejoin_pause_s", 0.05),
    )
    interval, max_pending = spec.get("interval_s", 0.01), spec.get("max_pending", 16)
    async with aiohttp.ClientSession() as session:
        emit({"event": "ready", "connected": 0})
        await ctl.expect("go")

        async def control() -> None:
            msg = await ctl.expect("killed")
            c.t_kill = float(msg["t"])

        ctl_task = asyncio.create_task(control())
        reader: asyncio.Task[None] | None = None
        steady_told = False
        while c.first_ack is None:
            if c.ws is None or reader is None or reader.done():
                c.joined, c.ws = False, None
                try:
                    c.ws = await asyncio.wait_for(open_ws(session, c.url), 2.0)
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    c.note(f"connect_failed:{type(e).__name__}")
                    await asyncio.sleep(interval)
                    continue
                c.pending.clear()  # what the old socket had unanswered will never be answered on it
                reader = asyncio.create_task(c.read(c.ws))
            if c.steady.is_set() and not steady_told:
                emit({"event": "steady", "seq": c.last_seq})
                steady_told = True
            if c.joined and len(c.pending) < max_pending:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await c.send_command()
            await asyncio.sleep(interval)
        if reader is not None:
            reader.cancel()
        ctl_task.cancel()
        await asyncio.gather(*(t for t in (reader, ctl_task) if t is not None), return_exceptions=True)
        if c.ws is not None:
            await c.ws.close()

    t_kill = c.t_kill or 0.0
    t_sent, t_ack, seq = c.first_ack

    def after_kill(what: str) -> float | None:
        return next((t - t_kill for t, w in c.timeline if w.startswith(what) and t >= t_kill), None)

    return {
        "first_ack_after_kill_s": t_ack - t_kill,
        "first_ack_sent_after_kill_s": t_sent - t_kill,
        "first_ack_seq": seq,
        "left_after_kill_s": after_kill("left:"),
        "rejoined_after_kill_s": after_kill("joined"),
        "commands_sent": c.n,
        "commands_acked": len(c.acked),
        "unanswered": len(c.pending),
        "counts": dict(c.counts),
        "gaps": c.gaps,
        "repeats": c.repeats,
        "last_seq": c.last_seq,
        "timeline": [(round(t - t_kill, 4), w) for t, w in c.timeline],
    }
