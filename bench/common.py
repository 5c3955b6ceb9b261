"""Pieces shared by the orchestrator, the load workers and the baseline server.

Load workers talk to the orchestrator with JSON lines: the worker prints ``{"event": "ready"}``
on stdout when its connections are set up, reads one ``{"cmd": "go", ...}`` line on stdin,
runs until the times it was given, and prints ``{"event": "result", ...}``. All times are
``time.monotonic()`` values, which on Linux is one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import time
from typing import Any

import msgspec

MSGPACK_PROTOCOL = "boardcast.v1.msgpack"


class Msg(msgspec.Struct):
    """The few fields of a server message the load generator looks at; the rest is skipped."""

    type: str
    rid: str | None = None
    seq: int | None = None
    code: str | None = None
    reason: str | None = None  # of a `left`


# A server frame holds one message or an array of them (see protocol.codec.Codec.batch).
FRAME_DECODER: msgspec.msgpack.Decoder[list[Msg] | Msg] = msgspec.msgpack.Decoder(list[Msg] | Msg)
ENCODER = msgspec.msgpack.Encoder()


def decode_frame(data: bytes) -> list[Msg]:
    decoded = FRAME_DECODER.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


async def sleep_until(t: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``t`` (not at all if it has)."""
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def emit(obj: dict[str, Any]) -> None:
    """One protocol line from a worker to the orchestrator."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)
