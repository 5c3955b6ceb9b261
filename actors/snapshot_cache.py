"""A board's snapshot encoded from each entity's bytes, kept between changes.

Encoding the whole snapshot of a board of 10,000 cards (34,000 entities, 11 MB in MessagePack,
12.5 MB in JSON) took 40-60 ms each time the board's seq had moved: after every change, the
next joiner and the next REST read paid for all of it. Almost all of those entities are the
same as at the previous seq, so each entity's encoding is kept (per wire format) until the
board's rules touch it, and a snapshot is the entities' kept bytes spliced in snapshot order:
only what changed is encoded again. The first snapshot in a wire format is encoded whole, as
before, and cut into its entities' bytes by decoding it into ``SnapshotWire`` (msgspec's
``Raw`` values are slices of the one buffer: no copies), which costs a fifth of encoding them
one by one.

The rules already mark every entity they change or delete (``StateBase._touch``, the same
marks the group commit persists from), and entities are only changed through the rules, so
forgetting an entity's bytes there is enough. The bytes equal those of encoding
``BoardState.snapshot()`` (tests/test_snapshot_cache.py checks it after random commands).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from protocol.codec import Codec


class SnapshotWire(msgspec.Struct, kw_only=True):
    """``protocol.model.BoardSnapshot`` with each entity already encoded: the same fields in
    the same order, so it encodes to the same bytes."""

    id: uuid.UUID
    title: str
    description: str
    seq: int
    columns: list[msgspec.Raw]
    cards: list[msgspec.Raw]
    allow_wip_overflow: bool = False
    labels: list[msgspec.Raw] = []
    fields: list[msgspec.Raw] = []
    checklists: list[msgspec.Raw] = []
    items: list[msgspec.Raw] = []
    comments: list[msgspec.Raw] = []
    attachments: list[msgspec.Raw] = []


_WIRE_DECODERS: dict[bool, msgspec.msgpack.Decoder[SnapshotWire] | msgspec.json.Decoder[SnapshotWire]] = {
    True: msgspec.msgpack.Decoder(SnapshotWire),
    False: msgspec.json.Decoder(SnapshotWire),
}


class EntityBytes:
    """Each entity's encoding per wire format (by codec name), until it is touched."""

    __slots__ = ("_by_codec",)

    def __init__(self) -> None:
        self._by_codec: dict[str, dict[str, dict[uuid.UUID, msgspec.Raw]]] = {}

    def forget(self, table: str, item_id: uuid.UUID) -> None:
        for tables in self._by_codec.values():
            tables[table].pop(item_id, None)

    def __contains__(self, codec: str) -> bool:
        return codec in self._by_codec

    def fill(self, codec: Codec, ordered: dict[str, list[uuid.UUID]], whole: bytes) -> None:
        """Keep each entity's bytes from ``whole``, a snapshot encoded by ``codec`` with its
        tables in the order ``ordered`` gives."""
        wire = _WIRE_DECODERS[codec.binary].decode(whole)
        self._by_codec[codec.name] = {
            table: dict(zip(ids, getattr(wire, table), strict=True)) for table, ids in ordered.items()
        }

    def raws(
        self, codec: Codec, table: str, ids: Iterable[uuid.UUID], store: Mapping[uuid.UUID, Any]
    ) -> list[msgspec.Raw]:
        """The encodings of ``ids`` (entities of ``store``) in order, encoding those not kept
        (after ``fill`` for this codec)."""
        encode = codec.encode
        kept = self._by_codec[codec.name][table]
        get = kept.get
        out: list[msgspec.Raw] = []
        append = out.append
        for i in ids:
            raw = get(i)
            if raw is None:
                raw = kept[i] = msgspec.Raw(encode(store[i]))
            append(raw)
        return out
