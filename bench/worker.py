"""One load-generating process: ``python -m bench.worker '<json spec>'``.

Roles (``spec["role"]``):

- ``viewers``  N connections join boards and count what arrives (messages, frames, seq gaps);
               with ``urls``, connection i goes to server i % len(urls) (nodes of a cluster).
- ``writer``   connections that each pipeline commands (at most ``max_inflight`` unanswered)
               to one board, counting acks; a connection's ``url`` overrides the spec's.
- ``failover`` one client that keeps joining and commanding one board through a node's death
               (:mod:`bench.failover_client`).
- ``paced``    one writer connection sending at a fixed rate plus one observer connection
               on the same board: send->ack and send->event latency per command (by ``rid``).
- ``idle``     N connections that join a board and then do nothing until told to stop.
- ``rest``     ``concurrency`` request loops of ``GET /api/v1/boards/{id}`` (optionally with
               ``headers``, and ``strict``: any answer but 200, or one without the
               ``require_header``, fails the worker).
- ``pginsert`` one asyncpg connection doing single-row INSERT transactions (a baseline).
- ``joins``    timed joins of one (large) board in both encodings (see :mod:`bench.large_joins`).

The conversation with the orchestrator is described in :mod:`bench.common`. Every loop ends
at the time it was given, and the whole process at ``spec["max_s"]`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import uvloop

from bench.common import ENCODER, MSGPACK_PROTOCOL, decode_frame, emit, log, percentile, sleep_until
from bench.large_joins import role_joins

LINGER_S = 0.5
# Frame types after which a socket delivers nothing more.
_ENDED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


@dataclass
class Window:
    """The measured interval; nothing is counted until ``go`` sets it."""

    start: float = float("inf")
    t0: float = float("inf")
    t1: float = float("inf")

    def set(self, go: dict[str, Any]) -> None:
        self.start, self.t0, self.t1 = go["start"], go["t0"], go["t1"]


# ------------------------------------------------------------------ connections


async def open_ws(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(
        url,
        protocols=(MSGPACK_PROTOCOL,),
        max_msg_size=0,  # batched frames and joined snapshots have no size bound
        autoping=True,
        compress=0,
        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
    )


async def handshake(ws: aiohttp.ClientWebSocketResponse, board_id: str, rid: str, timeout: float) -> int:
    """Wait for ``welcome``, join the board, return the ``joined`` seq."""
    async with asyncio.timeout(timeout):
        welcomed = False
        while not welcomed:
            frame = await ws.receive()
            if frame.type is not aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"no welcome: {frame.type.name} {frame.data!r}")
            welcomed = any(m.type == "welcome" for m in decode_frame(frame.data))
        await ws.send_bytes(ENCODER.encode({"type": "join", "rid": rid, "board_id": board_id}))
        while True:
            frame = await ws.receive()
            if frame.type is not aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"closed while joining: {frame.type.name} {frame.data!r}")
            for m in decode_frame(frame.data):
                if m.rid == rid and m.type == "joined":
                    return m.seq or 0
                if m.rid == rid and m.type == "error":
                    raise ConnectionError(f"join refused: {m.code}")


def command(i: int, board_id: str, rid: str, cards: list[str], columns: list[str]) -> bytes:
    """Alternately a move of a card to the end of a column and a title update."""
    card = cards[(i // 2) % len(cards)]
    if i % 2 == 0:
        op: dict[str, Any] = {
            "op": "card.move",
            "card_id": card,
            "column_id": columns[(i // 2) % len(columns)],
        }
    else:
        op = {"op": "card.update", "card_id": card, "title": f"title {i}"}
    return ENCODER.encode({"type": "cmd", "rid": rid, "board_id": board_id, "op": op})


# ------------------------------------------------------------------ viewers


@dataclass
class ViewerStats:
    frames: int = 0  # in the window
    messages: int = 0
    events: int = 0
    gaps: int = 0  # an event whose seq is not the previous one + 1 (whole run)
    closes: Counter[str] = field(default_factory=Counter)


@dataclass
class ViewerConn:
    ws: aiohttp.ClientWebSocketResponse
    last_seq: int = 0
    closed: bool = False


async def read_viewer(vc: ViewerConn, st: ViewerStats, win: Window) -> None:
    ws = vc.ws
    binary = aiohttp.WSMsgType.BINARY
    now = time.monotonic
    while True:
        frame = await ws.receive()
        if frame.type is binary:
            t = now()
            msgs = decode_frame(frame.data)
            counted = win.t0 <= t < win.t1
            if counted:
                st.frames += 1
                st.messages += len(msgs)
            for m in msgs:
                if m.type == "event":
                    seq = m.seq or 0
                    if seq != vc.last_seq + 1:
                        st.gaps += 1
                    vc.last_seq = seq
                    if counted:
                        st.events += 1
        elif frame.type in _ENDED:
            vc.closed = True
            st.closes[f"{ws.close_code}"] += 1
            return


async def connect_many(
    session: aiohttp.ClientSession,
    urls: list[str],
    boards: list[str],
    n: int,
    concurrency: int,
    tag: str,
    deadline: float,
) -> tuple[list[tuple[aiohttp.ClientWebSocketResponse, int]], Counter[str]]:
    """Open and join ``n`` connections (board i % len(boards), server i % len(urls)), at most
    ``concurrency`` at once."""
    sem = asyncio.Semaphore(concurrency)
    opened: list[tuple[aiohttp.ClientWebSocketResponse, int]] = []
    failures: Counter[str] = Counter()

    async def one(i: int) -> None:
        async with sem:
            if time.monotonic() > deadline:
                failures["setup deadline passed"] += 1
                return
            ws = None
            try:
                ws = await open_ws(session, urls[i % len(urls)])
                seq = await handshake(ws, boards[i % len(boards)], f"{tag}-j{i}", timeout=60)
                opened.append((ws, seq))
            except Exception as e:
                failures[f"{type(e).__name__}: {str(e)[:80]}"] += 1
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()  # bounded by ClientWSTimeout(ws_close=2)

    await asyncio.gather(*(one(i) for i in range(n)))
    return opened, failures


async def join_viewers(
    session: aiohttp.ClientSession, spec: dict[str, Any], st: ViewerStats, win: Window, setup_s: float
) -> tuple[list[ViewerConn], list[asyncio.Task[None]], Counter[str], float]:
    """Open and join the spec's viewer connections (giving up after ``spec["setup_s"]``,
    default ``setup_s``) and start reading them; returns the connections, their readers,
    the failures and the seconds it took to open them."""
    t_start = time.monotonic()
    pairs, failures = await connect_many(
        session,
        spec.get("urls") or [spec["url"]],  # viewers spread over several nodes: one URL each
        spec["boards"],
        spec["n"],
        spec.get("concurrency", 32),
        spec["tag"],
        t_start + spec.get("setup_s", setup_s),
    )
    took = time.monotonic() - t_start
    conns = [ViewerConn(ws, seq) for ws, seq in pairs]
    readers = [asyncio.create_task(read_viewer(vc, st, win)) for vc in conns]
    return conns, readers, failures, took


async def role_viewers(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    win = Window()
    st = ViewerStats()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns, readers, failures, _ = await join_viewers(session, spec, st, win, setup_s=60)
        go = await ctl.ready(connected=len(conns), failures=dict(failures))
        win.set(go)
        await sleep_until(win.t1)
        seq_at_t1 = [vc.last_seq for vc in conns]
        await sleep_until(win.t1 + spec.get("drain_s", 2.0))
        seq_end = [vc.last_seq for vc in conns]
        await cancel_all(readers)
        window = win.t1 - win.t0
        return {
            "connected": len(conns),
            "failures": dict(failures),
            "events": st.events,
            "messages": st.messages,
            "frames": st.frames,
            "window_s": window,
            "gaps": st.gaps,
            "closed_by_server": sum(vc.closed for vc in conns),
            "close_codes": dict(st.closes),
            "min_seq_at_t1": min(seq_at_t1, default=0),
            "max_seq_at_t1": max(seq_at_t1, default=0),
            "min_seq_end": min(seq_end, default=0),
        }


# ------------------------------------------------------------------ pipelined writers


@dataclass
class WriterConn:
    ws: aiohttp.ClientWebSocketResponse
    board_id: str
    cards: list[str]
    columns: list[str]
    inflight: int = 0
    free: asyncio.Event = field(default_factory=asyncio.Event)
    acked: int = 0  # in the window
    acked_total: int = 0
    sent: int = 0
    last_ack_seq: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closed: str | None = None


async def read_writer(wc: WriterConn, win: Window) -> None:
    ws = wc.ws
    binary = aiohttp.WSMsgType.BINARY
    while True:
        frame = await ws.receive()
        if frame.type is binary:
            t = time.monotonic()
            for m in decode_frame(frame.data):
                if m.type == "ack":
                    wc.inflight -= 1
                    wc.acked_total += 1
                    wc.last_ack_seq = max(wc.last_ack_seq, m.seq or 0)
                    if win.t0 <= t < win.t1:
                        wc.acked += 1
                elif m.type == "error" and m.rid is not None:
                    wc.inflight -= 1
                    wc.errors[m.code or "?"] += 1
                elif m.type == "left":  # the board stopped (or moved): counted, not re-joined
                    wc.errors[f"left:{m.reason}"] += 1
            wc.free.set()
        elif frame.type in _ENDED:
            wc.closed = f"{ws.close_code}"
            wc.free.set()
            return


async def send_pipelined(wc: WriterConn, win: Window, max_inflight: int, tag: str) -> None:
    await sleep_until(win.start)
    i = 0
    while wc.closed is None and time.monotonic() < win.t1:
        if wc.inflight >= max_inflight:
            wc.free.clear()
            remaining = win.t1 - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wc.free.wait(), remaining)
            continue
        # Send what the window allows in one go, then yield to the reader.
        burst = min(max_inflight - wc.inflight, 64)
        for _ in range(burst):
            data = command(i, wc.board_id, f"{tag}-{i}", wc.cards, wc.columns)
            wc.inflight += 1
            wc.sent += 1
            i += 1
            await wc.ws.send_bytes(data)


async def role_writer(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    win = Window()
    max_inflight = spec.get("max_inflight", 256)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns: list[WriterConn] = []
        for j, c in enumerate(spec["conns"]):
            ws = await open_ws(session, c.get("url", spec["url"]))  # a connection may name its node
            await handshake(ws, c["board_id"], f"{spec['tag']}-j{j}", timeout=30)
            conns.append(WriterConn(ws, c["board_id"], c["cards"], c["columns"]))
        readers = [asyncio.create_task(read_writer(wc, win)) for wc in conns]
        go = await ctl.ready(connected=len(conns))
        win.set(go)
        at_t1: dict[str, int] = {}

        async def snapshot_at_t1() -> None:
            await sleep_until(win.t1)
            at_t1.update({wc.board_id: max(at_t1.get(wc.board_id, 0), wc.last_ack_seq) for wc in conns})

        snap = asyncio.create_task(snapshot_at_t1())
        await asyncio.gather(
            *(send_pipelined(wc, win, max_inflight, f"{spec['tag']}-c{j}") for j, wc in enumerate(conns))
        )
        # Let what is in flight be answered (bounded), so the server is not left mid-batch.
        await wait_until(
            lambda: not any(wc.inflight > 0 and wc.closed is None for wc in conns),
            spec.get("drain_s", 10.0),
            0.05,
        )
        await snap
        await linger(win)
        await cancel_all(readers)
        errors: Counter[str] = Counter()
        for wc in conns:
            errors.update(wc.errors)
        return {
            "connections": len(conns),
            "acked": sum(wc.acked for wc in conns),
            "acked_total": sum(wc.acked_total for wc in conns),
            "sent": sum(wc.sent for wc in conns),
            "unanswered": sum(wc.inflight for wc in conns),
            "window_s": win.t1 - win.t0,
            "errors": dict(errors),
            "closed": [wc.closed for wc in conns if wc.closed is not None],
            "last_ack_seq": {wc.board_id: wc.last_ack_seq for wc in conns},
            "last_ack_seq_at_t1": at_t1,
        }


# ------------------------------------------------------------------ paced writer + observer


async def role_paced(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    win = Window()
    rate = float(spec["rate"])
    board, cards, columns, tag = spec["board_id"], spec["cards"], spec["columns"], spec["tag"]
    sent: dict[str, float] = {}
    lag: list[float] = []  # how late each send was against its schedule
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    errors: Counter[str] = Counter()
    closes: list[str] = []

    async def read(ws: aiohttp.ClientWebSocketResponse, kind: str, into: dict[str, float]) -> None:
        while True:
            frame = await ws.receive()
            if frame.type is aiohttp.WSMsgType.BINARY:
                t = time.monotonic()
                for m in decode_frame(frame.data):
                    if m.type == kind and m.rid is not None and m.rid in sent:
                        into.setdefault(m.rid, t)
                    elif m.type == "error":
                        errors[m.code or "?"] += 1
            elif frame.type in _ENDED:
                closes.append(f"{kind}:{ws.close_code}")
                return

    async with aiohttp.ClientSession() as session:
        writer = await open_ws(session, spec["url"])
        observer = await open_ws(session, spec["url"])
        await handshake(writer, board, f"{tag}-jw", timeout=30)
        await handshake(observer, board, f"{tag}-jo", timeout=30)
        readers = [
            asyncio.create_task(read(writer, "ack", acked)),
            asyncio.create_task(read(observer, "event", seen)),
        ]
        go = await ctl.ready(connected=2)
        win.set(go)
        total = int((win.t1 - win.start) * rate)
        await sleep_until(win.start)
        k = 0
        while k < total and not closes:
            now = time.monotonic()
            while k < total and win.start + k / rate <= now:
                rid = f"{tag}-{k}"
                data = command(k, board, rid, cards, columns)
                t = time.monotonic()
                sent[rid] = t
                lag.append(t - (win.start + k / rate))
                await writer.send_bytes(data)
                k += 1
            if k < total:
                await asyncio.sleep(max(0.0, win.start + k / rate - time.monotonic()))
        await wait_until(
            lambda: len(seen) >= len(sent) and len(acked) >= len(sent), spec.get("drain_s", 5.0), 0.02
        )
        await linger(win)
        await cancel_all(readers)

    measured = [rid for rid, t in sent.items() if win.t0 <= t < win.t1]
    to_event = [(seen[r] - sent[r]) * 1000 for r in measured if r in seen]
    to_ack = [(acked[r] - sent[r]) * 1000 for r in measured if r in acked]

    def summary(ms: list[float]) -> dict[str, Any]:
        return {
            "n": len(ms),
            "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99),
            "p999_ms": percentile(ms, 99.9),
            "max_ms": max(ms, default=None),
            "mean_ms": sum(ms) / len(ms) if ms else None,
        }

    span = (max(sent[r] for r in measured) - min(sent[r] for r in measured)) if len(measured) > 1 else 0.0
    return {
        "sent": len(sent),
        "measured": len(measured),
        "achieved_rate": (len(measured) - 1) / span if span else None,
        "send_lag_p99_ms": percentile([x * 1000 for x in lag], 99),
        "missing_events": len(measured) - len(to_event),
        "missing_acks": len(measured) - len(to_ack),
        "event": summary(to_event),
        "ack": summary(to_ack),
        "errors": dict(errors),
        "closed": closes,
    }


# ------------------------------------------------------------------ idle connections


async def role_idle(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    win = Window()  # never set: idle viewers count nothing
    st = ViewerStats()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns, readers, failures, setup_s = await join_viewers(session, spec, st, win, setup_s=120)
        emit({"event": "ready", "connected": len(conns), "failures": dict(failures), "setup_s": setup_s})
        await ctl.expect("stop")
        closed = sum(vc.closed for vc in conns)
        await cancel_all(readers)
        # Leaving the session drops every socket at once (no close handshakes): the process
        # exits next, and the server sees the connections go.
        return {
            "connected": len(conns),
            "failures": dict(failures),
            "setup_s": setup_s,
            "closed_by_server": closed,
            "close_codes": dict(st.closes),
        }


# ------------------------------------------------------------------ REST


async def role_rest(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    win = Window()
    url = f"{spec['base']}/api/v1/boards/{spec['board_id']}"
    conc = spec.get("concurrency", 32)
    strict = spec.get("strict", False)
    required = spec.get("require_header")
    ok = 0
    statuses: Counter[str] = Counter()
    latencies: list[float] = []

    async def refuse(r: aiohttp.ClientResponse) -> None:
        """Strict mode: a bad answer ends the worker, and so the run, with its reason."""
        why = "refused by the rate limiter" if r.status == 429 else "not 200"
        if r.status == 200:
            why = f"no {required} header (was the request rate limited at all?)"
        raise RuntimeError(f"GET {url} -> {r.status} ({why}): {(await r.text())[:200]}")

    headers = spec.get("headers")
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async with session.get(url) as r:  # one request to open a connection and check the URL
            await r.read()
            if r.status != 200 or (required and required not in r.headers):
                await refuse(r)
        go = await ctl.ready(connected=conc)
        win.set(go)

        async def loop() -> None:
            nonlocal ok
            await sleep_until(win.start)
            while (t := time.monotonic()) < win.t1:
                try:
                    async with session.get(url) as r:
                        await r.read()
                        status = r.status
                        if strict and (status != 200 or (required and required not in r.headers)):
                            await refuse(r)
                except aiohttp.ClientError as e:
                    if strict:
                        raise
                    statuses[type(e).__name__] += 1
                    continue
                done = time.monotonic()
                if win.t0 <= done < win.t1:
                    statuses[str(status)] += 1
                    if status == 200:
                        ok += 1
                        latencies.append((done - t) * 1000)

        await asyncio.gather(*(loop() for _ in range(conc)))
        await linger(win)
    return {
        "ok": ok,
        "statuses": dict(statuses),
        "window_s": win.t1 - win.t0,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


# ------------------------------------------------------------------ raw asyncpg baseline


async def role_pginsert(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    import uuid

    import asyncpg

    win = Window()
    conn = await asyncpg.connect(spec["dsn"])
    try:
        stmt = await conn.prepare(
            "INSERT INTO bench_single_insert (board_id, seq, body) VALUES ($1, $2, $3::jsonb)"
        )
        board = uuid.uuid4()
        body = json.dumps({"card_id": str(uuid.uuid4()), "column_id": str(uuid.uuid4()), "rank": 1 << 40})
        go = await ctl.ready(connected=1)
        win.set(go)
        await sleep_until(win.start)
        seq = done = 0
        while (t := time.monotonic()) < win.t1:
            seq += 1
            await stmt.fetch(board, seq, body)  # autocommit: one transaction, one fsync, per row
            if win.t0 <= t < win.t1:
                done += 1
        await linger(win)
    finally:
        await conn.close()
    return {"inserts": done, "window_s": win.t1 - win.t0}


# ------------------------------------------------------------------ reconnect storm


class JoinedMsg(msgspec.Struct):
    """A server message as the storm sees it: a ``joined``'s snapshot is kept undecoded
    (msgpack nil when it resumed with events)."""

    type: str
    rid: str | None = None
    seq: int | None = None
    code: str | None = None
    snapshot: msgspec.Raw = msgspec.Raw()


_JOINED_DECODER: msgspec.msgpack.Decoder[list[JoinedMsg] | JoinedMsg] = msgspec.msgpack.Decoder(
    list[JoinedMsg] | JoinedMsg
)
_NIL = b"\xc0"


@dataclass
class StormConn:
    ws: aiohttp.ClientWebSocketResponse
    last_seq: int
    reader: asyncio.Task[None] | None = None


@dataclass
class StormPhase:
    """One storm as this process saw it: when each ``joined`` arrived, and what failed."""

    joined_at: list[float] = field(default_factory=list)
    snapshots: int = 0
    failures: Counter[str] = field(default_factory=Counter)


async def storm_join(
    session: aiohttp.ClientSession, url: str, board_id: str, rid: str, since_seq: int | None, st: StormPhase
) -> StormConn | None:
    """Connect, wait for ``welcome`` and join (resuming after ``since_seq`` when given); records
    when the ``joined`` arrived in ``st``."""
    ws = None
    try:
        ws = await open_ws(session, url)
        async with asyncio.timeout(60):
            welcomed = False
            while not welcomed:
                frame = await ws.receive()
                if frame.type is not aiohttp.WSMsgType.BINARY:
                    raise ConnectionError(f"no welcome: {frame.type.name}")
                welcomed = any(m.type == "welcome" for m in decode_frame(frame.data))
            join: dict[str, Any] = {"type": "join", "rid": rid, "board_id": board_id}
            if since_seq is not None:
                join["since_seq"] = since_seq
            await ws.send_bytes(ENCODER.encode(join))
            while True:
                frame = await ws.receive()
                if frame.type is not aiohttp.WSMsgType.BINARY:
                    raise ConnectionError(f"closed while joining: {frame.type.name}")
                decoded = _JOINED_DECODER.decode(frame.data)
                for m in decoded if isinstance(decoded, list) else [decoded]:
                    if m.rid == rid and m.type == "joined":
                        st.joined_at.append(time.monotonic())
                        st.snapshots += bytes(m.snapshot) not in (b"", _NIL)
                        return StormConn(ws, m.seq or 0)
                    if m.rid == rid and m.type == "error":
                        raise ConnectionError(f"join refused: {m.code}")
    except Exception as e:
        st.failures[f"{type(e).__name__}: {str(e)[:80]}"] += 1
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
    return None


async def read_storm(sc: StormConn) -> None:
    """Keep reading (presence diffs, events), so the server never sees a slow consumer."""
    while True:
        frame = await sc.ws.receive()
        if frame.type is aiohttp.WSMsgType.BINARY:
            for m in decode_frame(frame.data):
                if m.type == "event":
                    sc.last_seq = max(sc.last_seq, m.seq or 0)
        elif frame.type in _ENDED:
            return


async def role_storm(spec: dict[str, Any], ctl: Control) -> dict[str, Any]:
    """``go`` (phase ``fresh``): at ``start`` open ``n`` connections at once and join without
    ``since_seq``; ``close``: close them all; ``go`` (phase ``resume``): at ``start`` open ``n``
    again and join with each one's last seq; ``stop``: close and report."""
    url, board, tag, n = spec["url"], spec["board_id"], spec["tag"], spec["n"]
    conns: list[StormConn] = []
    phases: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        emit({"event": "ready", "connected": 0})
        seqs: list[int | None] = [None] * n
        while True:
            msg = await ctl.next()
            if msg["cmd"] == "stop":
                break
            if msg["cmd"] == "close":
                for sc in conns:
                    if sc.reader is not None:
                        sc.reader.cancel()
                # The close handshakes of all at once (bounded by ClientWSTimeout(ws_close=2)).
                await asyncio.gather(*(sc.ws.close() for sc in conns), return_exceptions=True)
                seqs = [sc.last_seq for sc in conns] + [None] * (n - len(conns))
                conns = []
                emit({"event": "closed"})
                continue
            phase, st = msg["phase"], StormPhase()
            await sleep_until(msg["start"])
            since = seqs if phase == "resume" else [None] * n
            got = await asyncio.gather(
                *(storm_join(session, url, board, f"{tag}-{phase}-{i}", since[i], st) for i in range(n))
            )
            conns = [sc for sc in got if sc is not None]
            for sc in conns:
                sc.reader = asyncio.create_task(read_storm(sc))
            took = sorted(t - msg["start"] for t in st.joined_at)
            phases[phase] = {
                "joined": len(took),
                "snapshots": st.snapshots,
                "failures": dict(st.failures),
                "last_s": took[-1] if took else None,
                "p50_s": percentile(took, 50),
                "p90_s": percentile(took, 90),
            }
            emit({"event": "phase", "phase": phase, **phases[phase]})
        await cancel_all([sc.reader for sc in conns if sc.reader is not None])
    return {"phases": phases}


# ------------------------------------------------------------------ plumbing


async def wait_until(done: Callable[[], bool], max_s: float, step: float) -> None:
    """Poll ``done`` every ``step`` seconds, ``max_s / step`` times at the most."""
    for _ in range(int(max_s / step)):
        if done():
            break
        await asyncio.sleep(step)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def linger(win: Window) -> None:
    """Keep this process and its connections (and so their PostgreSQL backend) alive a little
    past the window, so the orchestrator's CPU reading at its end still finds them."""
    await sleep_until(win.t1 + LINGER_S)


class Control:
    """The worker's side of the JSON-lines conversation (stdin from, stdout to, the orchestrator)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def _next(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise SystemExit("orchestrator went away")
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def next(self) -> dict[str, Any]:
        """The orchestrator's next command, whatever it is."""
        return await self._next()

    async def ready(self, **info: Any) -> dict[str, Any]:
        """Report set-up done; return the ``go`` command (with the window's times)."""
        emit({"event": "ready", **info})
        return await self.expect("go")

    async def expect(self, cmd: str) -> dict[str, Any]:
        msg = await self._next()
        if msg.get("cmd") != cmd:
            raise SystemExit(f"expected {cmd}, got {msg}")
        return msg


ROLES = {
    "viewers": role_viewers,
    "writer": role_writer,
    "paced": role_paced,
    "idle": role_idle,
    "rest": role_rest,
    "pginsert": role_pginsert,
    "storm": role_storm,
    "joins": role_joins,
}


def _role(name: str) -> Callable[[dict[str, Any], Control], Awaitable[dict[str, Any]]]:
    if name == "failover":
        # a module of its own that imports this one, so loaded only when asked for
        from bench.failover_client import role_failover

        return role_failover
    return ROLES[name]


async def main(spec: dict[str, Any]) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ctl = Control(reader)
    try:
        async with asyncio.timeout(spec.get("max_s", 120)):
            result = await _role(spec["role"])(spec, ctl)
    except TimeoutError:
        emit({"event": "error", "error": f"worker exceeded its {spec.get('max_s', 120)} s limit"})
        return 3
    except Exception as e:
        emit({"event": "error", "error": f"{type(e).__name__}: {e}"})
        log(f"worker {spec.get('role')} failed: {e!r}")
        return 2
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(json.loads(sys.argv[1]))))
