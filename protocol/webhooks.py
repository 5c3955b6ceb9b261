"""What a webhook delivery carries, and how it is signed (docs/WEBHOOKS.md). No I/O.

A delivery is one board event, POSTed as JSON. The signature is HMAC-SHA256, keyed by the
webhook's secret, over ``f"{timestamp}.".encode() + body``, sent as
``Boardcast-Signature: t=<unix seconds>,v1=<hex digest>``: the timestamp inside the signed
text lets a receiver refuse replays of old deliveries. How a receiver verifies it is in the doc
(tests run that example against real deliveries).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

import msgspec

SIGNATURE_HEADER = "Boardcast-Signature"
EVENT_ID_HEADER = "Boardcast-Event-Id"
EVENT_KIND_HEADER = "Boardcast-Event-Kind"
WEBHOOK_ID_HEADER = "Boardcast-Webhook-Id"
ATTEMPT_HEADER = "Boardcast-Delivery-Attempt"
SECRET_PREFIX = "whsec_"


class Delivery(msgspec.Struct, kw_only=True):
    """The body of one delivery. ``id`` is the event's id (``<board_id>:<seq>``), the same in
    every attempt: receivers de-duplicate by it (delivery is at least once)."""

    id: str
    webhook_id: uuid.UUID
    board_id: uuid.UUID
    seq: int
    kind: str
    author: uuid.UUID
    ts_ms: int  # when the event was committed
    # The event as the board's event log holds it (the `kind`-tagged JSON of docs/PROTOCOL.md).
    event: msgspec.Raw


def event_id(board_id: uuid.UUID, seq: int) -> str:
    return f"{board_id}:{seq}"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` keyed by ``secret``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"
